"""Drafting: one head forward per round, with the head's projected context kept incrementally.

The head attends to a projection of the target's tapped features at every committed position. Those projections
are keys/values in the head's own context state; each round only the positions committed since the last round are
projected (their features wait in `pending` until then).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from transformers.utils import logging

from ..modeling_jetspec import JetSpecDraftModel
from .cache import cache_length, draft_context_of
from .draft_forward import DraftForward, HeadKVCache

logger = logging.get_logger(__name__)


@dataclass
class DraftContext:
    """What a head knows of a sequence between calls: its context state and the features not yet projected.

    It rides along on the target's returned cache (see `cache.attach_draft_context`) so that a later `generate`
    call that passes that cache back continues drafting where this one stopped.

    Attributes:
        head: a weak reference to the head that built the context (another head cannot reuse it).
        state: the head's keys and values of its projected context rows.
        pending: tapped target features of positions committed after the last draft, in order.
        tokens: the committed tokens the target cache holds, in order (to check that a later call continues the
            same sequence).
    """

    head: weakref.ref | None
    state: HeadKVCache
    pending: list[torch.Tensor]
    tokens: list[int] = field(default_factory=list)

    def __getstate__(self):
        # A weak reference cannot be pickled; an unpickled context belongs to no head and is not reused.
        return {**self.__dict__, "head": None}

    def __deepcopy__(self, memo):
        # A copied conversation (e.g. `copy.deepcopy(out.cache)` to branch a chat) is still this head's context.
        copied = DraftContext(
            head=self.head, state=copy.deepcopy(self.state, memo), pending=copy.deepcopy(self.pending, memo),
            tokens=list(self.tokens),
        )
        memo[id(self)] = copied
        return copied

    def belongs_to(self, head: JetSpecDraftModel) -> bool:
        return self.head is not None and self.head() is head


class Drafter(Protocol):
    """What the loop asks of whatever drafts each round: the head's `HeadDrafter`, or a stand-in (the benchmarks'
    oracle). As transformers' `CandidateGenerator` does for assisted decoding, this states the whole contract.

    Every tensor has a batch dimension: row `b` is the `b`-th sequence still being decoded.

    Attributes:
        causal: whether a block row sees only earlier block rows; the loop then drafts only as deep as the tree can
            use (`rows.DepthCap`).
    """

    causal: bool

    def add_context(self, features: torch.Tensor, valid: torch.Tensor | None = None,
                    counts: list[int] | None = None) -> None:
        """Take the tapped target features `(B, n, k*H)` of positions just committed, in order (`valid` `(B, n)`:
        which rows each sequence really has; `counts`: how many)."""

    def draft(self, anchors: torch.Tensor, depth: int) -> torch.Tensor:
        """Per-depth logits `(B, depth, V)` over the target's vocabulary for the blocks that start at `anchors`
        `(B, 1)`; row `d - 1` scores the token at depth `d`."""

    def select_rows(self, rows: list[int]) -> None:
        """Keep only these batch rows (finished sequences leave the batch)."""

    def context(self, tokens: list[int]) -> DraftContext:
        """What to carry on the returned cache so that a later call over the same sequence (`tokens`) continues."""

    def resume(self, context: DraftContext) -> None:
        """Continue from a context that `context` returned for this drafter's head."""


class HeadDrafter:
    """The `Drafter` of a JetSpec head: runs it for one generation (or one conversation), keeping its context
    across rounds.

    Target features of newly committed positions are queued with `add_context`; the next `draft` projects only
    those rows into the head's context state, then runs the block on top of it (`DraftForward`, the model's forward in
    fewer operations). Every tensor has a batch dimension: row `b` is the `b`-th sequence still being decoded.

    A causal (JetSpec) head's depth-d row sees only the block rows before it, so a block cut after the deepest
    depth the tree will use drafts exactly the same logits for the depths it keeps: `draft` cuts it. A
    bidirectional (DFlash) head's rows see the whole block, so it always runs the full block.
    """

    def __init__(self, head: JetSpecDraftModel, input_embeddings: nn.Module, lm_head: nn.Module, batch_size: int = 1,
                 draft_window: int | None = None):
        self.head = head
        self.input_embeddings = input_embeddings
        self.lm_head = lm_head
        self.block_size = head.config.block_size
        self.causal = head.config.causal_head
        self.lean = DraftForward(head, draft_window)
        self.state = self.lean.new_state(batch_size)
        self.pending: list[tuple[torch.Tensor, torch.Tensor | None, list[int] | None]] = []
        self._mask_embeds: torch.Tensor | None = None
        self._draft_weight: tuple[torch.Tensor, torch.Tensor] | None = None  # (lm_head weight, its draft rows)

    def context(self, tokens: list[int]) -> DraftContext:
        """The head's state, to be carried to a later call over the same sequence (`tokens`: what the target's
        cache holds)."""
        return DraftContext(head=weakref.ref(self.head), state=self.state, pending=list(self.pending), tokens=tokens)

    def resume(self, context: DraftContext) -> None:
        """Continue from a state that `context` returned for this head."""
        self.state, self.pending = context.state, list(context.pending)

    @property
    def context_lengths(self) -> list[int]:
        """Committed positions each row's head context covers: projected into the state, or pending."""
        lengths = list(self.state.next_positions)
        for features, _, counts in self.pending:
            added = counts if counts is not None else [features.shape[1]] * len(lengths)
            lengths = [length + count for length, count in zip(lengths, added)]
        return lengths

    def add_context(
        self, features: torch.Tensor, valid: torch.Tensor | None = None, counts: list[int] | None = None
    ) -> None:
        """Queue tapped target features `(B, n, k*H)` of positions just committed, in order; `valid` `(B, n)` and
        `counts` say which rows each sequence really has when they differ (see `DraftForward.add_context`)."""
        if features.shape[1] > 0:
            self.pending.append((features, valid, counts))

    def select_rows(self, rows: list[int]) -> None:
        """Keep only these batch rows (finished sequences leave the batch)."""
        self._flush()
        self.state.select_rows(rows)

    def _flush(self) -> None:
        if not self.pending:
            return
        if len(self.pending) == 1:
            features, valid, counts = self.pending[0]
        else:
            features = torch.cat([entry[0] for entry in self.pending], dim=1)
            if all(entry[1] is None for entry in self.pending):
                valid, counts = None, None
            else:
                valid = torch.cat(
                    [entry[1] if entry[1] is not None else torch.ones(entry[0].shape[:2], dtype=torch.bool,
                                                                       device=entry[0].device)
                     for entry in self.pending], dim=1,
                )
                counts = [sum(entry[2][row] if entry[2] is not None else entry[0].shape[1] for entry in self.pending)
                          for row in range(features.shape[0])]
        self.lean.add_context(self.state, features, valid, counts)
        self.pending = []

    def draft(self, anchors: torch.Tensor, depth: int) -> torch.Tensor:
        """Per-depth logits `(B, depth, V)` for the blocks that start at `anchors` (`(B, 1)` token ids)."""
        lean = self.lean
        if self._mask_embeds is None:
            mask_ids = torch.full(
                (1, self.block_size - 1), self.head.config.mask_token_id, dtype=anchors.dtype, device=anchors.device
            )
            self._mask_embeds = self.input_embeddings(mask_ids).to(lean.device, lean.dtype)
        self._flush()
        if self.state.hole_fraction() > MAX_HOLE_FRACTION:
            self.state.compact()
        block_length = depth + 1 if self.causal else self.block_size
        anchor_embeds = self.input_embeddings(anchors).to(lean.device, lean.dtype)
        mask_embeds = self._mask_embeds[:, : block_length - 1].expand(anchors.shape[0], -1, -1)
        hidden = lean.draft(self.state, torch.cat([anchor_embeds, mask_embeds], dim=1))
        rows = hidden[:, 1 : depth + 1].to(self.lm_head.weight.dtype)
        vocab_ids = self.head.draft_vocab_ids
        if vocab_ids is None:
            # The target's lm_head moves its input to its own execution device when offloaded (accelerate hooks).
            return self.lm_head(rows)
        return self.draft_vocabulary_logits(rows, vocab_ids)

    def draft_vocabulary_logits(self, rows: torch.Tensor, vocab_ids: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary with only the draft vocabulary scored: the projection runs on the
        `vocab_ids` rows of the lm_head alone, every other token gets -inf (it is never drafted)."""
        if self._draft_weight is None or self._draft_weight[0] is not self.lm_head.weight:
            weight = self.lm_head.weight[vocab_ids.to(self.lm_head.weight.device)]
            self._draft_weight = (self.lm_head.weight, weight)
        weight = self._draft_weight[1]
        scores = torch.nn.functional.linear(rows.to(weight.device), weight)
        logits = scores.new_full((*scores.shape[:-1], self.lm_head.weight.shape[0]), float("-inf"))
        logits[..., vocab_ids.to(logits.device)] = scores
        return logits


# Rows of a batch accept different lengths, which leaves holes in the shared context columns; past this share of
# masked columns the state is compacted (one copy) rather than attending over them every round.
MAX_HOLE_FRACTION = 0.25


def resume_from_cache(cache, drafter: HeadDrafter, head: JetSpecDraftModel, input_ids: torch.Tensor) -> int:
    """Continue from a cache passed in by the caller; returns how many leading columns of `input_ids` it holds.

    A cache returned by an earlier tree-decoding call with this head carries the head's context too, and both
    continue. Any other non-empty cache (plain decoding's, or one extended since) continues for the target, and the
    head drafts from the new tokens only.
    """
    cached_length = cache_length(cache)
    if cached_length == 0:
        return 0
    if cached_length >= input_ids.shape[1]:
        raise ValueError(
            f"The passed cache already holds {cached_length} positions but the input has {input_ids.shape[1]} "
            "tokens: pass `input_ids` that extend the cached sequence by at least one token (the full sequence, as "
            "for plain `generate`)."
        )
    context = draft_context_of(cache)
    if context is not None and context.tokens:
        known = min(len(context.tokens), cached_length)
        if input_ids[0, :known].tolist() != context.tokens[:known]:
            raise ValueError(
                "The passed cache was built for another sequence: its tokens differ from the start of `input_ids`. "
                "Pass the full sequence the cache was returned with (e.g. `out.sequences` plus the new tokens)."
            )
    if context is not None and context.belongs_to(head) and len(context.tokens) == cached_length:
        drafter.resume(context)
    else:
        logger.warning_once(
            "JetSpec: the passed cache carries no draft-head context for its cached positions (it was not returned by "
            "a tree-decoding call with this head, or was extended since). The target continues from the cache; the "
            "head drafts from the new tokens only, which can lower acceptance in this call."
        )
    return cached_length


__all__ = ["DraftContext", "Drafter", "HeadDrafter", "MAX_HOLE_FRACTION", "resume_from_cache"]
