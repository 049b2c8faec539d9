"""Drafting: one head forward per round, with the head's projected context kept incrementally.

The head attends to a projection of the target's tapped features at every committed position. Those projections
are keys/values in the head's own KV cache; each round only the positions committed since the last round are
projected (their features wait in `pending` until then).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from ..modeling_jetspec import JetSpecDraftModel


@dataclass
class DraftContext:
    """What a head knows of a sequence between calls: its context cache and the features not yet projected.

    It rides along on the target's returned cache (see `cache.attach_draft_context`) so that a later `generate`
    call that passes that cache back continues drafting where this one stopped.

    Attributes:
        head: a weak reference to the head that built the context (another head cannot reuse it).
        cache: the head's KV cache of projected context rows.
        pending: tapped target features of positions committed after the last draft, in order.
        tokens: the committed tokens the target cache holds, in order (to check that a later call continues the
            same sequence).
    """

    head: weakref.ref | None
    cache: DynamicCache
    pending: list[torch.Tensor]
    tokens: list[int] = field(default_factory=list)

    def __getstate__(self):
        # A weak reference cannot be pickled; an unpickled context belongs to no head and is not reused.
        return {**self.__dict__, "head": None}

    def belongs_to(self, head: JetSpecDraftModel) -> bool:
        return self.head is not None and self.head() is head


class HeadDrafter:
    """Runs a JetSpec head for one generation (or one conversation), keeping its context across rounds.

    Target features of newly committed positions are queued with `add_context`; the next `draft` projects only
    those rows, appends their keys/values to the head cache together with the block's, then drops the block rows
    again, so that between rounds the cache holds exactly the projected committed context.

    A causal (JetSpec) head's depth-d row sees only the block rows before it, so a block cut after the deepest
    depth the tree will use drafts exactly the same logits for the depths it keeps: `draft` cuts it. A
    bidirectional (DFlash) head's rows see the whole block, so it always runs the full block.
    """

    def __init__(self, head: JetSpecDraftModel, input_embeddings: nn.Module, lm_head: nn.Module):
        self.head = head
        self.input_embeddings = input_embeddings
        self.lm_head = lm_head
        self.block_size = head.config.block_size
        self.causal = head.config.causal_head
        self.cache = DynamicCache(config=head.config)
        self.pending: list[torch.Tensor] = []
        self._mask_embeds: torch.Tensor | None = None
        self._head_dtype = next(head.parameters()).dtype
        self._head_device = next(head.parameters()).device

    def context(self, tokens: list[int]) -> DraftContext:
        """The head's state, to be carried to a later call over the same sequence (`tokens`: what the target's
        cache holds)."""
        return DraftContext(head=weakref.ref(self.head), cache=self.cache, pending=list(self.pending), tokens=tokens)

    def resume(self, context: DraftContext) -> None:
        """Continue from a state that `context` returned for this head."""
        self.cache, self.pending = context.cache, list(context.pending)

    @property
    def context_length(self) -> int:
        """Committed positions the head knows of: projected into its cache, or pending."""
        return self.cache.get_seq_length() + sum(features.shape[1] for features in self.pending)

    def add_context(self, features: torch.Tensor) -> None:
        """Queue tapped target features `(1, n, k*H)` of positions just committed, in order."""
        if features.shape[1] > 0:
            self.pending.append(features)

    def draft(self, anchor: torch.Tensor, depth: int) -> torch.Tensor:
        """Per-depth logits `(depth, V)` for the block that starts at `anchor` (a `(1, 1)` token id tensor)."""
        if self._mask_embeds is None:
            mask_ids = torch.full(
                (1, self.block_size - 1), self.head.config.mask_token_id, dtype=anchor.dtype, device=anchor.device
            )
            self._mask_embeds = self.input_embeddings(mask_ids).to(self._head_device, self._head_dtype)
        block_length = depth + 1 if self.causal else self.block_size
        new_context = None
        if self.pending:
            new_context = torch.cat(self.pending, dim=1) if len(self.pending) > 1 else self.pending[0]
            new_context = new_context.to(self._head_device, self._head_dtype)
            self.pending = []

        anchor_embeds = self.input_embeddings(anchor).to(self._head_device, self._head_dtype)
        block_embeds = torch.cat([anchor_embeds, self._mask_embeds[:, : block_length - 1]], dim=1)
        # No position_ids: the head continues after its cache, so the committed context sits at 0..T-1 and the
        # block (anchor first) at T..T+block_length-1.
        hidden = self.head(
            noise_embeds=block_embeds, context_hidden_states=new_context, cache=self.cache
        ).last_hidden_state
        self.cache.crop(-block_length)
        # The target's lm_head moves its input to its own execution device when it is offloaded (accelerate hooks).
        return self.lm_head(hidden[0, 1 : depth + 1].to(self.lm_head.weight.dtype))


__all__ = ["HeadDrafter"]
