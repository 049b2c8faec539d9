"""Growing a token tree from the head's per-depth logits (DESIGN §3)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch


@dataclass
class DraftTree:
    """A token tree stored flat in creation order; node 0 is the root (the anchor token).

    Attributes:
        tokens: token id of each node.
        parents: index of each node's parent (-1 for the root). A parent always precedes its children.
        depths: depth of each node (0 for the root).
    """

    tokens: list[int]
    parents: list[int]
    depths: list[int]

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self) -> list[dict[int, int]]:
        """For every node, a map from a child's token to that child's index."""
        children: list[dict[int, int]] = [{} for _ in self.tokens]
        for node in range(1, len(self.tokens)):
            children[self.parents[node]][self.tokens[node]] = node
        return children

    def ancestor_matrix(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool `(N, N)`: entry `[n, m]` is True when `m` is `n` itself or one of its ancestors."""
        size = len(self.tokens)
        visible = torch.zeros(size, size, dtype=torch.bool)
        visible[0, 0] = True
        # Parents precede children, so each row is its parent's row plus the diagonal.
        for node in range(1, size):
            visible[node] = visible[self.parents[node]]
            visible[node, node] = True
        return visible.to(device)


def build_tree(
    root_token: int,
    depth_logits: torch.Tensor,
    budget: int,
    width: int,
    max_depth: int | None = None,
) -> DraftTree:
    """Best-first expansion by cumulative log-probability under a node budget.

    Args:
        root_token: the anchor, i.e. the last committed token.
        depth_logits: `(D, V)` head logits; row `d - 1` scores the token at depth `d`.
        budget: the most nodes the tree may hold, root included (`>= 1`).
        width: children attached when a node is expanded (its depth's top-`width` tokens).
        max_depth: deepest level allowed; defaults to `D`.

    Repeatedly the frontier node with the highest cumulative log-probability is expanded; its children are attached
    best first, so a budget that runs out mid-expansion keeps the most likely ones.
    """
    if budget < 1:
        raise ValueError(f"`tree_budget` must be >= 1, got {budget}.")
    depth_limit = depth_logits.shape[0] if max_depth is None else min(max_depth, depth_logits.shape[0])
    tree = DraftTree(tokens=[root_token], parents=[-1], depths=[0])
    if budget == 1 or depth_limit < 1 or width < 1:
        return tree

    width = min(width, depth_logits.shape[-1])
    log_probs = torch.log_softmax(depth_logits[:depth_limit].float(), dim=-1)
    top_log_probs, top_tokens = log_probs.topk(width, dim=-1)
    # One device->host copy per round: everything below is a small heap walk on the host.
    top_log_probs, top_tokens = top_log_probs.tolist(), top_tokens.tolist()

    frontier = [(-0.0, 0)]  # (negated cumulative log-prob, node index); heapq pops the smallest
    while frontier and len(tree) < budget:
        negated_score, node = heapq.heappop(frontier)
        child_depth = tree.depths[node] + 1
        for log_prob, token in zip(top_log_probs[child_depth - 1], top_tokens[child_depth - 1]):
            if len(tree) >= budget:
                break
            tree.tokens.append(token)
            tree.parents.append(node)
            tree.depths.append(child_depth)
            if child_depth < depth_limit:
                heapq.heappush(frontier, (negated_score - log_prob, len(tree) - 1))
    return tree


__all__ = ["DraftTree", "build_tree"]
