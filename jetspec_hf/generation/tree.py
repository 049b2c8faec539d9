"""Growing a token tree from the head's per-depth scores under a node budget.

The head scores every depth with one marginal distribution (it never sees the branch), so under its model the
chance that the target accepts a node is the product of the probabilities along the node's path, and the expected
number of accepted draft tokens of a tree is the sum of its nodes' path probabilities. Path probabilities never
rise with depth, so the `budget` nodes with the highest path probability form a connected tree, and that tree
maximises the expectation. `build_tree` picks exactly those nodes one at a time (node-level best-first); the first
N nodes it picks are the best N-node tree for every N, so trees of different budgets are nested.

`expansion="fanout"` keeps the published reference's rule instead: pop the best frontier node and attach all of
its top-`width` children at once. It spends budget on unlikely siblings and stays selectable as a baseline.

An extra branch (a prompt-lookup chain copied from the history, see `lookup.py`) joins the same heap: its nodes
are scored on the same log-probability scale and compete for the same budget, and a node whose token equals an
existing child of the same parent is shared instead of duplicated.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

TREE_EXPANSIONS = ("node", "fanout")


@dataclass
class DraftTree:
    """A token tree stored flat in creation order; node 0 is the root (the anchor token).

    Attributes:
        tokens: token id of each node.
        parents: index of each node's parent (-1 for the root). A parent always precedes its children.
        depths: depth of each node (0 for the root).
        scores: the drafter's log-probability of each node's path (0 for the root), when the builder knows it.
    """

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    scores: list[float] | None = None
    _children: list[dict[int, int]] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def root_only(cls, root_token: int) -> DraftTree:
        """The one-node tree: verifying it is one step of plain decoding."""
        return cls(tokens=[root_token], parents=[-1], depths=[0], scores=[0.0], _children=[{}])

    def truncated(self, size: int) -> DraftTree:
        """The first `size` nodes, a tree of their own (parents precede children). For a node-level tree they are
        the best `size`-node tree."""
        if size >= len(self.tokens):
            return self
        return DraftTree(
            tokens=self.tokens[:size],
            parents=self.parents[:size],
            depths=self.depths[:size],
            scores=None if self.scores is None else self.scores[:size],
        )

    def children(self) -> list[dict[int, int]]:
        """For every node, a map from a child's token to that child's index."""
        if self._children is None:
            children: list[dict[int, int]] = [{} for _ in self.tokens]
            for node in range(1, len(self.tokens)):
                children[self.parents[node]][self.tokens[node]] = node
            self._children = children
        return self._children

    def ancestor_matrix(self) -> np.ndarray:
        """Bool `(N, N)` on the host: entry `[n, m]` is True when `m` is `n` itself or one of its ancestors."""
        size = len(self.tokens)
        visible = np.zeros((size, size), dtype=bool)
        visible[0, 0] = True
        # Parents precede children, so each row is its parent's row plus the diagonal.
        for node in range(1, size):
            visible[node] = visible[self.parents[node]]
            visible[node, node] = True
        return visible


@dataclass
class DepthCandidates:
    """The head's best tokens per depth, on the host.

    Attributes:
        log_probs: `log_probs[d - 1][r]` is the log-probability of the rank-`r` token at depth `d`.
        tokens: `tokens[d - 1][r]` is that token.
        branch_log_probs: log-probability the head gives to each token of an extra branch at that token's depth
            (`branch_log_probs[i]` for the branch token at depth `i + 1`); empty without a branch.
    """

    log_probs: list[list[float]]
    tokens: list[list[int]]
    branch_log_probs: list[float] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return len(self.tokens)

    def ranked_children(self, tree: DraftTree, node: int) -> tuple[list[float], list[int]]:
        """The log-probabilities and tokens of `node`'s possible children, best first: the ranked tokens of the
        next depth, the same for every node of a depth (the head never sees the branch)."""
        depth = tree.depths[node]
        return self.log_probs[depth], self.tokens[depth]

    def branch_log_prob(self, tree: DraftTree, parent: int, index: int, token: int) -> float | None:
        """The head's log-probability of the extra branch's token `index` (`token`) under `parent`."""
        return self.branch_log_probs[index]

    def added(self, tree: DraftTree, node: int) -> None:
        """Told of every node the builder adds (nothing to do: the ranking does not depend on the path)."""


def depth_candidates(depth_logits: torch.Tensor, width: int, branch_tokens: list[int] | None = None) -> DepthCandidates:
    """Top-`width` tokens of each depth's distribution (and the log-probabilities of an extra branch's tokens),
    read back to the host in one transfer.

    Args:
        depth_logits: `(D, V)` head logits; row `d - 1` scores the token at depth `d`.
        width: how many ranked tokens per depth the tree may use.
        branch_tokens: an extra chain of tokens starting at depth 1 (at most `D` of them are scored).
    """
    return batch_depth_candidates(depth_logits[None], width, [branch_tokens])[0]


def batch_depth_candidates(
    depth_logits: torch.Tensor, width: int, branch_tokens: list[list[int] | None]
) -> list[DepthCandidates]:
    """`depth_candidates` for every row of a batch `(B, D, V)`, still in one device-to-host transfer."""
    batch, depth, vocab = depth_logits.shape
    width = min(width, vocab)
    log_probs = torch.log_softmax(depth_logits.float(), dim=-1)
    top_log_probs, top_tokens = log_probs.topk(width, dim=-1)
    # float32 holds token ids exactly up to 2**24, far above any vocabulary.
    parts = [top_log_probs.flatten(), top_tokens.flatten().to(top_log_probs.dtype)]
    branches = [list(tokens or [])[:depth] for tokens in branch_tokens]
    for row, branch in enumerate(branches):
        if branch:
            rows = torch.arange(len(branch), device=log_probs.device)
            parts.append(log_probs[row, rows, torch.tensor(branch, device=log_probs.device)])
    flat = torch.cat(parts).tolist()
    size = depth * width
    candidates, offset = [], 2 * batch * size
    for row, branch in enumerate(branches):
        values, tokens = flat[row * size : (row + 1) * size], flat[(batch + row) * size : (batch + row + 1) * size]
        candidates.append(
            DepthCandidates(
                log_probs=[values[d * width : (d + 1) * width] for d in range(depth)],
                tokens=[[int(token) for token in tokens[d * width : (d + 1) * width]] for d in range(depth)],
                branch_log_probs=flat[offset : offset + len(branch)],
            )
        )
        offset += len(branch)
    return candidates


class ChildRanking(Protocol):
    """What `build_tree` asks while it grows a tree: `DepthCandidates` (the head's ranking per depth), or a ranking
    that depends on each node's path (`grammar.GrammarRanking`: only tokens a grammar allows there).

    Attributes:
        depth: the deepest depth it ranks.
    """

    depth: int

    def ranked_children(self, tree: DraftTree, node: int) -> tuple[list[float], list[int]]:
        """Log-probabilities and tokens of the children `node` may get, best first."""

    def branch_log_prob(self, tree: DraftTree, parent: int, index: int, token: int) -> float | None:
        """The drafter's log-probability of the extra branch's token `index` (`token`) as a child of `parent`;
        `None` when that token may not go there (the branch ends)."""

    def added(self, tree: DraftTree, node: int) -> None:
        """Called once for every node added, in order, before any of its children is ranked."""


@dataclass(frozen=True)
class ExtraBranch:
    """A chain of tokens to graft under the root (e.g. a prompt-lookup continuation).

    Attributes:
        tokens: the chain, first token at depth 1.
        log_prior: estimated log-probability that the target accepts one more token of the chain, given that it
            accepted the previous ones; the chain node at depth `d` scores at least `d * log_prior`.
    """

    tokens: list[int]
    log_prior: float


# Heap entries: (negated score, tie-break counter, kind, parent node, rank or branch index).
_HEAD, _BRANCH = 0, 1


def build_tree(
    root_token: int,
    candidates: ChildRanking,
    budget: int,
    width: int,
    max_depth: int | None = None,
    expansion: str = "node",
    branch: ExtraBranch | None = None,
) -> DraftTree:
    """The draft tree of at most `budget` nodes (root included) for one round.

    Args:
        root_token: the anchor, i.e. the last committed token.
        candidates: the ranking of each node's children: the head's ranked tokens per depth (`depth_candidates`),
            or any `ChildRanking`.
        budget: the most nodes the tree may hold, root included (`>= 1`).
        width: at most this many ranked children per node.
        max_depth: deepest level allowed; defaults to the candidates' depth.
        expansion: `"node"` (best nodes one at a time, the default) or `"fanout"` (best frontier node's top-`width`
            children at once, the published reference's rule).
        branch: an extra chain grafted under the root, merged with the head's nodes (`"node"` expansion only).
    """
    if budget < 1:
        raise ValueError(f"`tree_budget` must be >= 1, got {budget}.")
    if expansion not in TREE_EXPANSIONS:
        raise ValueError(f"`tree_expansion` must be one of {TREE_EXPANSIONS}, got {expansion!r}.")
    if expansion == "fanout" and branch is not None:
        raise ValueError("An extra branch (prompt lookup) needs `tree_expansion='node'`.")
    depth_limit = candidates.depth if max_depth is None else min(max_depth, candidates.depth)
    tree = DraftTree.root_only(root_token)
    candidates.added(tree, 0)
    if budget == 1 or depth_limit < 1 or (width < 1 and branch is None):
        return tree
    if expansion == "fanout":
        _grow_by_fanout(tree, candidates, budget, width, depth_limit)
    else:
        _grow_by_node(tree, candidates, budget, width, depth_limit, branch)
    return tree


def _add_node(tree: DraftTree, token: int, parent: int) -> int:
    node = len(tree.tokens)
    tree.tokens.append(token)
    tree.parents.append(parent)
    tree.depths.append(tree.depths[parent] + 1)
    tree._children.append({})
    tree._children[parent][token] = node
    return node


def _grow_by_node(
    tree: DraftTree,
    candidates: ChildRanking,
    budget: int,
    width: int,
    depth_limit: int,
    branch: ExtraBranch | None,
) -> None:
    scores = tree.scores  # cumulative log-probability of each node
    rankings: dict[int, tuple[list[float], list[int]]] = {}
    heap: list[tuple] = []
    counter = 0

    def push(score: float, kind: int, parent: int, index: int) -> None:
        nonlocal counter
        heapq.heappush(heap, (-score, counter, kind, parent, index))
        counter += 1

    def push_child(node: int, rank: int) -> None:
        # The rank-`rank` child of `node`, if the ranking has one within the width.
        if rank == 0:
            if tree.depths[node] >= depth_limit or width < 1:
                return
            rankings[node] = candidates.ranked_children(tree, node)
        log_probs = rankings[node][0]
        if rank < min(width, len(log_probs)):
            push(scores[node] + log_probs[rank], _HEAD, node, rank)

    def push_branch_child(node: int, index: int) -> None:
        # The branch token at `index` sits at depth index + 1, under `node` (the previous branch node or the root).
        if index < len(branch.tokens) and index < depth_limit:
            log_prob = candidates.branch_log_prob(tree, node, index, branch.tokens[index])
            if log_prob is not None:
                push(max(scores[node] + log_prob, (index + 1) * branch.log_prior), _BRANCH, node, index)

    push_child(0, 0)
    if branch is not None:
        push_branch_child(0, 0)
    while heap and len(tree.tokens) < budget:
        negated_score, _, kind, parent, index = heapq.heappop(heap)
        if kind == _HEAD:
            token = rankings[parent][1][index]
            push_child(parent, index + 1)
        else:
            token = branch.tokens[index]
        existing = tree._children[parent].get(token)
        if existing is not None:
            # Both sources proposed this token under this parent: one shared node, reached by the branch too.
            if kind == _BRANCH:
                push_branch_child(existing, index + 1)
            continue
        node = _add_node(tree, token, parent)
        scores.append(-negated_score)
        candidates.added(tree, node)
        push_child(node, 0)
        if kind == _BRANCH:
            push_branch_child(node, index + 1)


def _grow_by_fanout(tree: DraftTree, candidates: ChildRanking, budget: int, width: int, depth_limit: int) -> None:
    frontier = [(-0.0, 0)]  # (negated cumulative log-prob, node index); heapq pops the smallest
    while frontier and len(tree.tokens) < budget:
        negated_score, node = heapq.heappop(frontier)
        child_depth = tree.depths[node] + 1
        row_log_probs, row_tokens = candidates.ranked_children(tree, node)
        for log_prob, token in zip(row_log_probs[:width], row_tokens[:width]):
            if len(tree.tokens) >= budget:
                break
            child = _add_node(tree, token, node)
            tree.scores.append(-negated_score + log_prob)
            candidates.added(tree, child)
            if child_depth < depth_limit:
                heapq.heappush(frontier, (negated_score - log_prob, child))


__all__ = [
    "ChildRanking",
    "DepthCandidates",
    "DraftTree",
    "ExtraBranch",
    "TREE_EXPANSIONS",
    "batch_depth_candidates",
    "build_tree",
    "depth_candidates",
]
