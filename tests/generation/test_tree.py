import pytest
import torch

from jetspec_hf.generation.tree import DraftTree, build_tree


def _depth_logits(rows):
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_budget_counts_the_root_and_is_never_exceeded():
    logits = torch.randn(5, 20)
    for budget in (1, 2, 7, 64):
        tree = build_tree(3, logits, budget=budget, width=4)
        assert len(tree) == min(budget, 1 + 4 + 4 * 4 + 4**3 + 4**4 + 4**5)
        assert tree.tokens[0] == 3 and tree.parents[0] == -1 and tree.depths[0] == 0


def test_budget_one_is_the_root_alone_and_budget_below_one_is_refused():
    assert len(build_tree(3, torch.randn(4, 10), budget=1, width=3)) == 1
    with pytest.raises(ValueError, match="tree_budget"):
        build_tree(3, torch.randn(4, 10), budget=0, width=3)


def test_best_first_expansion_follows_cumulative_log_probability():
    # Depth 1 prefers token 0 (0.6) over token 1 (0.4); depth 2 is nearly certain (token 2 at 0.9).
    # After the root's two children, the best frontier node is token 0 (log 0.6), then its child (log 0.54),
    # which beats token 1 (log 0.4): the budget goes deep on the likely branch.
    logits = _depth_logits([[0.6, 0.4, 1e-6, 1e-6], [1e-6, 0.07, 0.9, 0.03], [0.9, 0.05, 0.03, 0.02]])
    tree = build_tree(7, logits, budget=5, width=2)
    assert tree.tokens == [7, 0, 1, 2, 1]
    assert tree.parents == [-1, 0, 0, 1, 1]
    assert tree.depths == [0, 1, 1, 2, 2]
    deeper = build_tree(7, logits, budget=7, width=2)
    # Next the depth-2 node with cumulative 0.54 is expanded (children at depth 3), before token 1 at 0.4.
    assert deeper.parents[5:] == [3, 3] and deeper.depths[5:] == [3, 3]


def test_depth_limit_and_width_are_respected():
    logits = torch.randn(6, 30)
    tree = build_tree(1, logits, budget=500, width=3, max_depth=2)
    assert max(tree.depths) == 2 and len(tree) == 1 + 3 + 9
    child_counts = torch.bincount(torch.tensor(tree.parents[1:]))
    assert int(child_counts.max()) <= 3


def test_ancestor_matrix_and_children():
    tree = DraftTree(tokens=[5, 6, 7, 8], parents=[-1, 0, 0, 1], depths=[0, 1, 1, 2])
    expected = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool
    )
    assert torch.equal(tree.ancestor_matrix(), expected)
    assert tree.children() == [{6: 1, 7: 2}, {8: 3}, {}, {}]
