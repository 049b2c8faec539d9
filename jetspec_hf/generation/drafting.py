"""Drafting: one head forward per round, with the head's projected context kept incrementally.

The head attends to a projection of the target's tapped features at every committed position. Those projections
are keys/values in the head's own context state; each round only the positions committed since the last round are
projected (their features wait in `pending` until then).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from ..modeling_jetspec import JetSpecDraftModel
from .lean_head import LeanHead, LeanHeadState


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
    state: LeanHeadState
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
    those rows into the head's context state, then runs the block on top of it (`LeanHead`, the model's forward in
    fewer operations).

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
        self.lean = LeanHead(head)
        self.state = self.lean.new_state()
        self.pending: list[torch.Tensor] = []
        self._mask_embeds: torch.Tensor | None = None

    def context(self, tokens: list[int]) -> DraftContext:
        """The head's state, to be carried to a later call over the same sequence (`tokens`: what the target's
        cache holds)."""
        return DraftContext(head=weakref.ref(self.head), state=self.state, pending=list(self.pending), tokens=tokens)

    def resume(self, context: DraftContext) -> None:
        """Continue from a state that `context` returned for this head."""
        self.state, self.pending = context.state, list(context.pending)

    @property
    def context_length(self) -> int:
        """Committed positions the head knows of: projected into its state, or pending."""
        return self.state.length + sum(features.shape[1] for features in self.pending)

    def add_context(self, features: torch.Tensor) -> None:
        """Queue tapped target features `(1, n, k*H)` of positions just committed, in order."""
        if features.shape[1] > 0:
            self.pending.append(features)

    def draft(self, anchor: torch.Tensor, depth: int) -> torch.Tensor:
        """Per-depth logits `(depth, V)` for the block that starts at `anchor` (a `(1, 1)` token id tensor)."""
        lean = self.lean
        if self._mask_embeds is None:
            mask_ids = torch.full(
                (1, self.block_size - 1), self.head.config.mask_token_id, dtype=anchor.dtype, device=anchor.device
            )
            self._mask_embeds = self.input_embeddings(mask_ids).to(lean.device, lean.dtype)
        if self.pending:
            lean.add_context(self.state, torch.cat(self.pending, dim=1) if len(self.pending) > 1 else self.pending[0])
            self.pending = []
        block_length = depth + 1 if self.causal else self.block_size
        anchor_embeds = self.input_embeddings(anchor).to(lean.device, lean.dtype)
        block_embeds = torch.cat([anchor_embeds, self._mask_embeds[:, : block_length - 1]], dim=1)
        hidden = lean.draft(self.state, block_embeds)
        # The target's lm_head moves its input to its own execution device when it is offloaded (accelerate hooks).
        return self.lm_head(hidden[1 : depth + 1].to(self.lm_head.weight.dtype))


__all__ = ["HeadDrafter"]
