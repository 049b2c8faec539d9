"""Acceptance: walking the verified tree and choosing the tokens to commit.

At each node of the walk the target's own next token `y` is chosen exactly as plain decoding would choose it
(argmax, or a sample of the processed distribution, with the logits processors seeing that node's own prefix);
the walk moves to the child holding `y` if there is one, else stops with `y` as the correction. Every committed
token is therefore the target's own choice at its true prefix: lossless for greedy and for sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList

from .tree import DraftTree


@dataclass
class TreeWalk:
    """Outcome of one walk.

    Attributes:
        path: accepted node indices, root first (the root is always "accepted": it is the committed anchor).
        tokens: tokens to commit: those of `path[1:]`, then the correction token.
        scores: processed scores behind each committed token, `(1, V)` each (only when requested).
        logits: raw logits behind each committed token, `(1, V)` each (only when requested).
    """

    path: list[int]
    tokens: list[int]
    scores: list[torch.Tensor] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)


# Every node's processed scores `(N, V)` from its raw logits `(N, V)`, the tree and the row's committed ids.
NodeScorer = Callable[[torch.Tensor, DraftTree, torch.Tensor], torch.Tensor]


def _choose(scores: torch.Tensor, do_sample: bool) -> torch.Tensor:
    if do_sample:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(-1)
    return scores.argmax(dim=-1)


def walk_trees(
    trees: list[DraftTree],
    node_logits: torch.Tensor,
    committed_ids: list[torch.Tensor],
    logits_processors: list[LogitsProcessorList],
    do_sample: bool,
    keep_scores: bool = False,
    keep_logits: bool = False,
    node_scorers: list[NodeScorer | None] | None = None,
) -> list[TreeWalk]:
    """Walk every row's tree with the target's `node_logits` `(B, N, V)` (rows padded to the largest tree).

    `committed_ids[b]` `(1, L)` ends with row b's root (anchor) token; the prefix `logits_processors[b]` see at a
    node is that followed by the path to the node. `node_scorers[b]`, where given, stands for row b's processors:
    it returns every node's processed scores at once (`grammar.RowGrammar.node_scores`).
    """
    node_scorers = node_scorers or [None] * len(trees)
    if all(len(processors) == 0 for processors in logits_processors) and not keep_scores and not any(node_scorers):
        # Nothing depends on the prefix: choose at every node of every row at once, then walk on the host (one
        # sync). Each node's choice is independent, and a walk only reads the nodes it visits, so this equals the
        # sequential walk. Greedy reads the raw logits (their argmax is that of their float32 copy); sampling
        # needs float32, as plain decoding's softmax does.
        scores = node_logits.float() if do_sample else node_logits
        chosen = _choose(scores.reshape(-1, scores.shape[-1]), do_sample).view(scores.shape[:2]).tolist()
        walks = []
        for row, tree in enumerate(trees):
            walk = _walk_chosen(tree, chosen[row])
            if keep_logits:
                walk.logits = [node_logits[row, node : node + 1].float() for node in walk.path]
            walks.append(walk)
        return walks
    walks = []
    for row, tree in enumerate(trees):
        scorer = node_scorers[row]
        if scorer is None:
            walks.append(_walk_in_order(tree, node_logits[row], committed_ids[row], logits_processors[row], do_sample,
                                        keep_scores, keep_logits))
            continue
        # The scores of every node are known up front: choose at all of them at once, as above.
        logits = node_logits[row, : len(tree)]
        scores = scorer(logits, tree, committed_ids[row])
        walk = _walk_chosen(tree, _choose(scores, do_sample).tolist())
        if keep_scores:
            walk.scores = [scores[node : node + 1] for node in walk.path]
        if keep_logits:
            walk.logits = [logits[node : node + 1].float() for node in walk.path]
        walks.append(walk)
    return walks


def _walk_chosen(tree: DraftTree, chosen: list[int]) -> TreeWalk:
    """The walk when the target's token at every node is known up front."""
    children = tree.children()
    path, tokens = [0], []
    while True:
        token = chosen[path[-1]]
        tokens.append(token)
        child = children[path[-1]].get(token)
        if child is None:
            return TreeWalk(path=path, tokens=tokens)
        path.append(child)


def _walk_in_order(tree, node_logits, committed_ids, logits_processor, do_sample, keep_scores, keep_logits):
    """The walk when processors read each node's own prefix: one node at a time, from the root."""
    children = tree.children()
    path, tokens, scores_kept, logits_kept = [0], [], [], []
    prefix = committed_ids
    while True:
        node = path[-1]
        raw = node_logits[node : node + 1].float()
        scores = logits_processor(prefix, raw.clone()) if len(logits_processor) else raw
        token_tensor = _choose(scores, do_sample)
        token = int(token_tensor.item())
        tokens.append(token)
        if keep_scores:
            scores_kept.append(scores)
        if keep_logits:
            logits_kept.append(raw)
        child = children[node].get(token)
        if child is None:
            break
        path.append(child)
        prefix = torch.cat([prefix, token_tensor.view(1, 1).to(prefix.dtype)], dim=1)
    return TreeWalk(path=path, tokens=tokens, scores=scores_kept, logits=logits_kept)


__all__ = ["NodeScorer", "TreeWalk", "walk_trees"]
