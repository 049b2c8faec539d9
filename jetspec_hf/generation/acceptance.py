"""Acceptance: walking the verified tree and choosing the tokens to commit.

At each node of the walk the target's own next token `y` is chosen exactly as plain decoding would choose it
(argmax, or a sample of the processed distribution, with the logits processors seeing that node's own prefix);
the walk moves to the child holding `y` if there is one, else stops with `y` as the correction. Every committed
token is therefore the target's own choice at its true prefix: lossless for greedy and for sampling.
"""

from __future__ import annotations

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


def _choose(scores: torch.Tensor, do_sample: bool) -> torch.Tensor:
    if do_sample:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(-1)
    return scores.argmax(dim=-1)


def walk_tree(
    tree: DraftTree,
    node_logits: torch.Tensor,
    committed_ids: torch.Tensor,
    logits_processor: LogitsProcessorList,
    do_sample: bool,
    keep_scores: bool = False,
    keep_logits: bool = False,
) -> TreeWalk:
    """Walk `tree` from the root using the target's `node_logits` `(N, V)`.

    `committed_ids` `(1, L)` ends with the root (anchor) token; the prefix seen by processors at a node is
    `committed_ids` followed by the path to that node.
    """
    children = tree.children()
    if len(logits_processor) == 0 and not keep_scores:
        # Nothing depends on the prefix: choose at every node at once and walk on the host (one sync). Each node's
        # choice is independent, and the walk only reads the nodes it visits, so this equals the sequential walk.
        # Greedy reads the raw logits (their argmax is that of their float32 copy); sampling needs float32, as plain
        # decoding's softmax does.
        chosen = _choose(node_logits.float() if do_sample else node_logits, do_sample).tolist()
        path, tokens = [0], []
        while True:
            token = chosen[path[-1]]
            tokens.append(token)
            child = children[path[-1]].get(token)
            if child is None:
                break
            path.append(child)
        walk = TreeWalk(path=path, tokens=tokens)
        if keep_logits:
            walk.logits = [node_logits[node : node + 1].float() for node in path]
        return walk

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


__all__ = ["TreeWalk", "walk_tree"]
