"""Drafting: one head forward per round, with the head's context kept incrementally (DESIGN §2)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from ..modeling_jetspec import JetSpecDraftModel


class HeadDrafter:
    """Runs a JetSpec head for one generation, keeping its projected context in a KV cache across rounds.

    Target features of newly committed positions are queued with `add_context`; the next `draft` projects only
    those rows, appends their keys/values to the head cache (together with the block's), then drops the block
    rows again so that the cache holds exactly the committed context.
    """

    def __init__(self, head: JetSpecDraftModel, input_embeddings: nn.Module, lm_head: nn.Module):
        self.head = head
        self.input_embeddings = input_embeddings
        self.lm_head = lm_head
        self.block_size = head.config.block_size
        self.cache = DynamicCache(config=head.config)
        self._pending: list[torch.Tensor] = []
        self._mask_ids: torch.Tensor | None = None
        self._head_dtype = next(head.parameters()).dtype

    def add_context(self, features: torch.Tensor) -> None:
        """Queue tapped target features `(1, n, k*H)` of positions just committed, in order."""
        if features.shape[1] > 0:
            self._pending.append(features)

    @torch.no_grad()
    def draft(self, anchor: torch.Tensor, depth: int) -> torch.Tensor:
        """Per-depth logits `(depth, V)` for the block that starts at `anchor` (a `(1, 1)` token id tensor)."""
        if self._mask_ids is None:
            self._mask_ids = torch.full(
                (1, self.block_size - 1), self.head.config.mask_token_id, dtype=anchor.dtype, device=anchor.device
            )
        new_context = torch.cat(self._pending, dim=1).to(self._head_dtype) if self._pending else None
        self._pending = []

        block_embeds = self.input_embeddings(torch.cat([anchor, self._mask_ids], dim=1)).to(self._head_dtype)
        # No position_ids: the head continues after its cache, so the committed context sits at 0..T-1 and the
        # block (anchor first) at T..T+B-1.
        hidden = self.head(
            noise_embeds=block_embeds, context_hidden_states=new_context, cache=self.cache
        ).last_hidden_state
        self.cache.crop(-self.block_size)
        depth_hidden = hidden[0, 1 : depth + 1].to(self.lm_head.weight.dtype)
        return self.lm_head(depth_hidden)


__all__ = ["HeadDrafter"]
