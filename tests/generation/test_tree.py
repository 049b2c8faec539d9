import itertools
import math

import numpy as np
import pytest
import torch

from jetspec_hf.generation.tree import DraftTree, ExtraBranch, build_tree, depth_candidates


def _candidates(rows, width=None):
    """DepthCandidates from per-depth probability rows (tokens are the row indices)."""
    logits = torch.log(torch.tensor(rows, dtype=torch.float32))
    return depth_candidates(logits, width or logits.shape[-1])


def _path_log_prob(tree, node, candidates):
    total = 0.0
    while node > 0:
        depth = tree.depths[node]
        rank = candidates.tokens[depth - 1].index(tree.tokens[node])
        total += candidates.log_probs[depth - 1][rank]
        node = tree.parents[node]
    return total


def _all_paths(candidates, width, depth_limit):
    """Brute force: the path log-probability of every node a width-capped tree could hold."""
    scores = []
    for depth in range(1, depth_limit + 1):
        for ranks in itertools.product(range(width), repeat=depth):
            scores.append(sum(candidates.log_probs[d][r] for d, r in enumerate(ranks)))
    return sorted(scores, reverse=True)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget", [1, 2, 5, 13, 40])
def test_node_level_tree_holds_the_best_path_probabilities(seed, budget):
    generator = torch.Generator().manual_seed(seed)
    candidates = depth_candidates(torch.randn(3, 6, generator=generator) * 2, width=3)
    tree = build_tree(0, candidates, budget=budget, width=3)
    assert len(tree) == min(budget, 1 + 3 + 9 + 27)
    chosen = sorted((_path_log_prob(tree, node, candidates) for node in range(1, len(tree))), reverse=True)
    best = _all_paths(candidates, width=3, depth_limit=3)[: len(tree) - 1]
    assert chosen == pytest.approx(best)


def test_node_level_trees_are_nested():
    candidates = depth_candidates(torch.randn(5, 30, generator=torch.Generator().manual_seed(7)), width=8)
    largest = build_tree(4, candidates, budget=64, width=8)
    for budget in (1, 2, 9, 16, 33):
        smaller = build_tree(4, candidates, budget=budget, width=8)
        assert smaller.tokens == largest.tokens[:budget]
        assert smaller.parents == largest.parents[:budget]


def test_width_caps_children_and_depth_limit_holds():
    candidates = depth_candidates(torch.randn(6, 30), width=30)
    tree = build_tree(1, candidates, budget=500, width=3, max_depth=2)
    assert max(tree.depths) == 2 and len(tree) == 1 + 3 + 9
    assert int(np.bincount(tree.parents[1:]).max()) <= 3


def test_budget_one_is_the_root_alone_and_budget_below_one_is_refused():
    candidates = depth_candidates(torch.randn(4, 10), width=3)
    assert len(build_tree(3, candidates, budget=1, width=3)) == 1
    with pytest.raises(ValueError, match="tree_budget"):
        build_tree(3, candidates, budget=0, width=3)
    with pytest.raises(ValueError, match="tree_expansion"):
        build_tree(3, candidates, budget=4, width=3, expansion="beam")


def test_node_level_goes_deep_where_full_fanout_spends_budget_on_siblings():
    # Depth 1 prefers token 0 (0.6) over token 1 (0.4); depth 2 is nearly certain (token 2 at 0.9).
    candidates = _candidates([[0.6, 0.4, 1e-6, 1e-6], [1e-6, 0.07, 0.9, 0.03], [0.9, 0.05, 0.03, 0.02]])
    node = build_tree(7, candidates, budget=4, width=2)
    # 0 (0.6), then 0→2 (0.54), then 0→2→0 (0.486) beats token 1 (0.4).
    assert node.tokens == [7, 0, 2, 0] and node.parents == [-1, 0, 1, 2]
    fanout = build_tree(7, candidates, budget=5, width=2, expansion="fanout")
    # The reference rule attaches both children of the best frontier node at once.
    assert fanout.tokens == [7, 0, 1, 2, 1] and fanout.parents == [-1, 0, 0, 1, 1]


def _branch_candidates(branch_tokens):
    rows = [[0.5, 0.3, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]]
    return depth_candidates(torch.log(torch.tensor(rows)), width=4, branch_tokens=branch_tokens)


def test_an_extra_branch_merges_with_head_nodes_and_competes_for_the_budget():
    candidates = _branch_candidates([0, 3, 3])
    tree = build_tree(9, candidates, budget=6, width=4, branch=ExtraBranch(tokens=[0, 3, 3], log_prior=math.log(0.9)))
    # The branch's first token is also the head's top token: one shared node, not two.
    depth_one = [tree.tokens[node] for node in range(len(tree)) if tree.depths[node] == 1]
    assert depth_one.count(0) == 1
    # Its confident prior (0.9 a token) puts the whole chain 0 → 3 → 3 in the tree ahead of the head's own guesses
    # (0 → 3 alone has head probability 0.05).
    children = tree.children()
    second = children[children[0][0]][3]
    assert 3 in children[second]
    assert len(tree) == 6


def test_a_doubtful_branch_gets_no_node_the_head_deserves_more():
    candidates = _branch_candidates([2, 2, 2])
    doubtful = build_tree(9, candidates, budget=3, width=4, branch=ExtraBranch([2, 2, 2], math.log(0.01)))
    # Head: 0 (0.5), then 0 → 0 (0.35); the branch's 2 scores max(head 0.1, prior 0.01) = 0.1.
    assert doubtful.tokens == [9, 0, 0]
    roomy = build_tree(9, candidates, budget=5, width=4, branch=ExtraBranch([2, 2, 2], math.log(0.01)))
    # With two more nodes: 1 (0.3) and 1 → 0 (0.21) still beat the branch's 2 (0.1).
    assert roomy.tokens == [9, 0, 0, 1, 0] and roomy.parents == [-1, 0, 1, 0, 3]


def test_depth_candidates_reads_ranked_tokens_and_branch_scores():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    candidates = depth_candidates(logits, width=2, branch_tokens=[2, 1, 0])
    assert candidates.tokens == [[1, 2], [0, 2]]
    assert candidates.log_probs[0] == pytest.approx([math.log(0.6), math.log(0.3)], rel=1e-5)
    # Only as many branch tokens as drafted depths are scored.
    assert candidates.branch_log_probs == pytest.approx([math.log(0.3), math.log(0.2)], rel=1e-5)


def test_ancestor_matrix_and_children():
    tree = DraftTree(tokens=[5, 6, 7, 8], parents=[-1, 0, 0, 1], depths=[0, 1, 1, 2])
    expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=bool)
    assert np.array_equal(tree.ancestor_matrix(), expected)
    assert tree.children() == [{6: 1, 7: 2}, {8: 3}, {}, {}]
