"""Grammar-aware trees: under an xgrammar grammar the head drafts only tokens the grammar allows, and the verify's
logits get every node's grammar mask in one operation.

Plain decoding with xgrammar's HF processor (`xgrammar.contrib.hf.LogitsProcessor`) masks each step's logits with
the grammar's bitmask at that step's prefix. Without help, the head drafts as if there were no grammar, so most of
its nodes are tokens the grammar forbids and acceptance collapses. When a row's processors hold such a processor,
the row gets a `RowGrammar`: its own matcher over the committed tokens, advanced as that processor advances its own
(every generated token, none of the prompt, nothing once the grammar has terminated). Each round it

* ranks each node's children among the tokens the grammar allows after that node's path (`GrammarRanking`): the
  head's probabilities renormalised over those tokens, so that a token the grammar forces costs the tree nothing
  in path probability and forced stretches are drafted deep;
* gives every node the bitmask plain decoding applies at the node's prefix (one forked matcher per node);
* when the row's other processors read nothing of the prefix (temperature, top-k, ...), masks the verify's logits
  `(N, V)` with those bitmasks at once, so the walk chooses at every node in one vectorised step
  (`node_scores`). The processor object itself is then never called: the row's matcher is the grammar state.
  Otherwise the walk calls the processors node by node as always (they keep their own state), and the masks only
  shape the tree.

Every node's mask is exactly plain decoding's at that prefix, so greedy output stays token-identical and sampling
distribution-identical. Other grammar libraries keep the per-token path (see `acceptance.py`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import LogitsProcessorList
from transformers.generation import logits_process as lp

from .per_row import XGRAMMAR_PROCESSOR, class_names
from .tree import DraftTree

# Processors that read nothing but the scores they are given (no prefix, no length): applying them to the `(N, V)`
# scores of every node at once gives each node what a plain step would.
PREFIX_FREE_PROCESSORS = (
    lp.TemperatureLogitsWarper, lp.TopKLogitsWarper, lp.TopPLogitsWarper, lp.MinPLogitsWarper,
    lp.TypicalLogitsWarper, lp.EpsilonLogitsWarper, lp.EtaLogitsWarper, lp.LogitNormalization,
    lp.InfNanRemoveLogitsProcessor, lp.SuppressTokensLogitsProcessor,
)


def is_xgrammar_processor(processor) -> bool:
    """Whether `processor` is xgrammar's HF processor (recognised by name, so xgrammar is not imported here)."""
    return XGRAMMAR_PROCESSOR in class_names(processor)


def row_grammar(processors: LogitsProcessorList) -> RowGrammar | None:
    """The grammar state for a row whose processors hold one unused xgrammar HF processor with one grammar, else
    `None` (the row keeps the per-token path: no grammar, several, or a processor already used, which plain decoding
    would continue from its stale state)."""
    grammar_processors = [processor for processor in processors if is_xgrammar_processor(processor)]
    if len(grammar_processors) != 1:
        return None
    processor = grammar_processors[0]
    if processor.matchers or len(processor.compiled_grammars) != 1:
        return None
    others = [item for item in processors if item is not processor]
    owns_walk = all(type(item) in PREFIX_FREE_PROCESSORS for item in others)
    return RowGrammar(processor.compiled_grammars[0], processors if owns_walk else None, processor)


class RowGrammar:
    """One row's grammar state over its committed tokens, and the masks of its current tree.

    Args:
        compiled_grammar: the row's `xgrammar.CompiledGrammar`.
        walk_processors: the row's processors when this object scores the walk itself (every other processor is in
            `PREFIX_FREE_PROCESSORS`); `None` when the walk calls the processors node by node.
        processor: the xgrammar processor this object stands for (left untouched).
    """

    def __init__(self, compiled_grammar, walk_processors: LogitsProcessorList | None, processor=None):
        import xgrammar

        self._xgrammar = xgrammar
        self.matcher = xgrammar.GrammarMatcher(compiled_grammar)
        self.vocab_size = compiled_grammar.tokenizer_info.vocab_size
        self.walk_processors = walk_processors
        self.processor = processor
        # The bitmask plain decoding applies at the next step. Once the grammar has terminated the processor fills
        # no new one and keeps applying the last it filled, so this keeps it too.
        self.next_mask = self.fill(self.matcher)
        self._round_ranking: GrammarRanking | None = None  # this round's, until its tokens are committed

    @property
    def owns_walk(self) -> bool:
        return self.walk_processors is not None

    def fill(self, matcher) -> torch.Tensor:
        """The bitmask `(W,)` int32 of the tokens `matcher` allows next."""
        mask = self._xgrammar.allocate_token_bitmask(1, self.vocab_size)
        matcher.fill_next_token_bitmask(mask, 0)
        return mask[0]

    def commit(self, tokens: list[int]) -> None:
        """Advance over committed tokens, as the processor would over the steps that chose them."""
        self._round_ranking = None  # the round's tree masks belong to the prefix before these tokens
        matcher = self.matcher
        for token in tokens:
            if matcher.is_terminated():
                return
            if not matcher.accept_token(token):
                raise RuntimeError(f"The grammar refused committed token {token}: the walk chose a token its mask "
                                   "forbids, which plain decoding cannot do.")
            if matcher.is_terminated():
                # The processor's last fill was the state before this (stop) token: keep that one.
                matcher.rollback(1)
                self.next_mask = self.fill(matcher)
                matcher.accept_token(token)
        if not matcher.is_terminated():
            self.next_mask = self.fill(matcher)

    def ranking(self, depth_logits: torch.Tensor, width: int) -> GrammarRanking:
        """A fresh `GrammarRanking` for this round's tree (`depth_logits` `(D, V)`: the head's; at most `width`
        children per node)."""
        self._round_ranking = GrammarRanking(self, depth_logits, width)
        return self._round_ranking

    def tree_masks(self, tree: DraftTree) -> torch.Tensor:
        """The bitmasks `(N, W)` of `tree`'s nodes: the ranked tree's own, cut to `tree` (the budget policy and a
        static cache keep a prefix of its nodes), or the root's alone for a root-only tree."""
        grown = None if self._round_ranking is None else self._round_ranking.tree
        if grown is not None and len(tree) <= len(grown) and tree.tokens == grown.tokens[: len(tree)]:
            return self._round_ranking.node_masks(len(tree))
        if len(tree) != 1:
            raise ValueError("RowGrammar.tree_masks needs this round's tree (the one `ranking` grew) or a root.")
        return self.next_mask[None]

    def node_scores(self, node_logits: torch.Tensor, tree: DraftTree, committed_ids: torch.Tensor) -> torch.Tensor:
        """The processed scores `(N, V)` of every node of `tree` (`node_logits` `(N, V)`), each exactly what plain
        decoding's processors give at that node's prefix: the processors in their order, the grammar's as that
        node's bitmask."""
        scores = node_logits.float()
        ids = committed_ids.expand(scores.shape[0], -1)
        for processor in self.walk_processors:
            if processor is self.processor:
                masks = self.tree_masks(tree)
                # As the processor does: the bitmask is applied on CPU unless the logits are on a CUDA device.
                on_cpu = scores.device.type != "cuda"
                masked = scores.cpu() if on_cpu else scores
                self._xgrammar.apply_token_bitmask_inplace(masked, masks.to(masked.device))
                scores = masked.to(scores.device) if on_cpu else masked
            else:
                scores = processor(ids, scores)
        return scores


class GrammarRanking:
    """A `tree.ChildRanking` that ranks each node's children among the tokens the grammar allows after its path.

    Each node gets a forked matcher that has accepted its path, and its bitmask (one row of a buffer the tree's
    nodes share); its children are the head's best tokens at the next depth among those the bitmask allows, with
    log-probabilities renormalised over them. An extra branch (prompt lookup) ends at its first token the grammar
    forbids. The ranking runs in numpy on the host: a node costs a few small array operations, where torch's
    per-operation overhead would dominate at these sizes.
    """

    def __init__(self, grammar: RowGrammar, depth_logits: torch.Tensor, width: int):
        self.grammar = grammar
        self.depth = depth_logits.shape[0]
        self.vocab_size = depth_logits.shape[1]
        self.width = max(1, min(width, self.vocab_size))
        self.log_probs = torch.log_softmax(depth_logits.float(), dim=-1).cpu().numpy()
        self.tree: DraftTree | None = None
        self.matchers: list = []
        self.masks = grammar._xgrammar.allocate_token_bitmask(_INITIAL_NODES, grammar.vocab_size)
        self._rankings: dict[int, tuple[list[float], list[int], float]] = {}

    def _mask_row(self, node: int) -> torch.Tensor:
        if node >= self.masks.shape[0]:
            self.masks = torch.cat([self.masks, torch.empty_like(self.masks)])
        return self.masks[node]

    def added(self, tree: DraftTree, node: int) -> None:
        grammar = self.grammar
        if node == 0:
            self.tree = tree
            self.matchers.append(grammar.matcher)  # the root's state is the row's: children fork it, none changes it
            self._mask_row(0).copy_(grammar.next_mask)
            return
        parent = tree.parents[node]
        matcher = self.matchers[parent].fork()
        if not matcher.is_terminated() and not matcher.accept_token(tree.tokens[node]):
            raise RuntimeError(f"The grammar refused drafted token {tree.tokens[node]}, which its mask allowed.")
        self.matchers.append(matcher)
        row = self._mask_row(node)
        if matcher.is_terminated():
            # A terminated grammar fills no new mask: the processor keeps applying the last one (the parent's).
            row.copy_(self.masks[parent])
        else:
            matcher.fill_next_token_bitmask(self.masks, node)

    def node_masks(self, count: int) -> torch.Tensor:
        """The bitmasks `(count, W)` of the first `count` nodes."""
        return self.masks[:count]

    def _allowed(self, node: int) -> np.ndarray:
        """Bool `(V,)`: the tokens node's bitmask allows (tokens past the bitmask are allowed, as
        `xgrammar.apply_token_bitmask_inplace` leaves them unmasked). Bit `t % 32` of word `t // 32` is token `t`:
        on a little-endian host the words' bytes unpack in token order."""
        bits = np.unpackbits(self.masks[node].numpy().view(np.uint8), bitorder="little").view(bool)
        if bits.shape[0] >= self.vocab_size:
            return bits[: self.vocab_size]
        return np.concatenate([bits, np.ones(self.vocab_size - bits.shape[0], dtype=bool)])

    def _ranking(self, node: int):
        """(renormalised log-probabilities of the best allowed children, their tokens, the log of the allowed tokens'
        share of the head's probability)."""
        if node not in self._rankings:
            allowed = self._allowed(node)
            row = self.log_probs[self.tree.depths[node]]
            tokens = np.flatnonzero(allowed)
            values = row[tokens]
            mass = float(np.exp(values).sum())
            log_mass = math.log(mass) if mass > 0 else 0.0
            if tokens.shape[0] > self.width:
                # Partition the allowed tokens only: a selection over thousands of tied -inf is slow.
                best = np.argpartition(values, -self.width)[-self.width :]
                tokens, values = tokens[best], values[best]
            order = np.argsort(-values, kind="stable")
            tokens, values = tokens[order], values[order]
            keep = np.isfinite(values)
            self._rankings[node] = ((values[keep] - log_mass).tolist(), tokens[keep].tolist(), log_mass)
        return self._rankings[node]

    def ranked_children(self, tree: DraftTree, node: int) -> tuple[list[float], list[int]]:
        values, tokens, _ = self._ranking(node)
        return values, tokens

    def branch_log_prob(self, tree: DraftTree, parent: int, index: int, token: int) -> float | None:
        if not allows(self.masks[parent], token):
            return None
        if token >= self.vocab_size:
            return float("-inf")
        _, _, log_mass = self._ranking(parent)
        return float(self.log_probs[tree.depths[parent], token]) - log_mass


# Mask rows allocated per tree at first; doubled when a tree grows past them.
_INITIAL_NODES = 64


def allows(mask: torch.Tensor, token: int) -> bool:
    """Whether bitmask `mask` `(W,)` allows `token` (tokens past the bitmask are left unmasked, as
    `xgrammar.apply_token_bitmask_inplace` leaves them)."""
    word, bit = divmod(token, 32)
    return word >= mask.shape[0] or bool((int(mask[word]) >> bit) & 1)


__all__ = ["GrammarRanking", "allows", "PREFIX_FREE_PROCESSORS", "RowGrammar", "is_xgrammar_processor", "row_grammar"]
