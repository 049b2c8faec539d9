"""The draft head's attention masks: the drafted block over the target context, and a sliding window over it."""

from __future__ import annotations

import torch


def block_attention_mask(
    query_length: int,
    key_length: int,
    causal: bool,
    dtype: torch.dtype,
    device: torch.device,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Additive mask `[batch, 1, query_length, key_length]` for one drafted block.

    The block's queries are the LAST `query_length` key rows, so every block position sees all earlier keys (the
    target context); inside the block a causal head sees positions <= its own, a bidirectional head sees all.
    An additive float mask is right for every attention backend (eager adds a bool mask as 0/1). Returns `None`
    when nothing is masked, so that SDPA can take its unmasked path.
    """
    visible = None
    if causal and query_length > 1:
        key_positions = torch.arange(key_length, device=device)
        query_positions = torch.arange(key_length - query_length, key_length, device=device)
        visible = (key_positions[None, :] <= query_positions[:, None])[None, None]
    if key_padding_mask is not None and not bool(key_padding_mask.all()):
        padding_visible = key_padding_mask[:, None, None, :].bool()
        visible = padding_visible if visible is None else visible & padding_visible
    if visible is None:
        return None
    return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, torch.finfo(dtype).min)


def windowed_attention_mask(
    mask: torch.Tensor | None, query_positions: torch.Tensor, key_positions: torch.Tensor, window: int, dtype
) -> torch.Tensor:
    """`mask` (additive, broadcastable to `[batch, 1, Q, K]`, or `None` for none) with every key at a position
    `<= query position - window` hidden as well: transformers' sliding-window rule, a query sees the `window`
    positions ending at its own. `query_positions` `(batch, Q)` and `key_positions` `(batch, K)` are the rows'
    rotary positions."""
    hidden = (query_positions[:, :, None] - key_positions[:, None, :]) >= window
    minimum = torch.finfo(dtype).min
    windowed = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device).masked_fill(hidden, minimum)[:, None]
    # Two hidden entries add up to -inf: clamp back to the dtype's minimum, as a single mask holds it.
    return windowed if mask is None else (mask + windowed).clamp(min=minimum)


__all__ = ["block_attention_mask", "windowed_attention_mask"]
