import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from jetspec_hf.generation.acceptance import walk_trees
from jetspec_hf.generation.tree import DraftTree


def walk_tree(tree, node_logits, committed_ids, logits_processor, do_sample, keep_scores=False, keep_logits=False):
    """`walk_trees` for one tree, with its logits `(N, V)`."""
    return walk_trees([tree], node_logits[None], [committed_ids], [logits_processor], do_sample, keep_scores,
                      keep_logits)[0]


# root(5) ─┬─ 6 ── 8
#          └─ 7
TREE = DraftTree(tokens=[5, 6, 7, 8], parents=[-1, 0, 0, 1], depths=[0, 1, 1, 2])


def _logits_choosing(tokens, vocab=10):
    logits = torch.zeros(len(tokens), vocab)
    for node, token in enumerate(tokens):
        logits[node, token] = 5.0
    return logits


def test_greedy_walk_follows_matching_children_and_ends_with_the_correction():
    # The target picks 6 at the root, 8 after 6, then 3 after 8.
    walk = walk_tree(TREE, _logits_choosing([6, 8, 0, 3]), torch.tensor([[5]]), LogitsProcessorList(), False)
    assert walk.path == [0, 1, 3]
    assert walk.tokens == [6, 8, 3]


def test_greedy_walk_rejects_at_the_root():
    walk = walk_tree(TREE, _logits_choosing([9, 8, 0, 3]), torch.tensor([[5]]), LogitsProcessorList(), False)
    assert walk.path == [0] and walk.tokens == [9]


def test_processors_see_each_node_s_own_prefix():
    # With a strong repetition penalty the repeated token loses: at node 1 (prefix ... 5, 6) token 6 is penalised.
    logits = torch.zeros(4, 10)
    logits[0, 6] = 5.0
    logits[1, 6], logits[1, 4] = 5.0, 4.0  # without the penalty the walk would pick 6 again
    processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(penalty=100.0)])
    walk = walk_tree(TREE, logits, torch.tensor([[5]]), processors, False, keep_scores=True, keep_logits=True)
    assert walk.tokens == [6, 4]
    assert walk.path == [0, 1]
    assert len(walk.scores) == len(walk.logits) == 2
    assert walk.scores[1][0, 6] < walk.logits[1][0, 6]
