"""Cache update: keep the committed prefix plus the accepted tree nodes, contiguously."""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


def keep_accepted_path(cache: Cache, prefix_length: int, path: list[int]) -> None:
    """Compact `cache` in place after a verify pass.

    The cache holds `prefix_length` committed rows followed by one row per tree node. Afterwards it holds the
    prefix followed by the rows of `path` (root first), moved to slots `prefix_length .. prefix_length+len(path)-1`;
    every other node's row is dropped. Only the tail is touched.
    """
    total_length = cache.get_seq_length()
    kept_length = prefix_length + len(path)
    if path != list(range(len(path))):
        source_rows = [prefix_length + node for node in path]
        sources: dict[torch.device, torch.Tensor] = {}  # layers split over devices each read their own copy
        for layer in cache.layers:
            device = layer.keys.device
            if device not in sources:
                sources[device] = torch.tensor(source_rows, device=device)
            # index_select copies first, so overlapping source and destination slots are safe.
            layer.keys[..., prefix_length:kept_length, :] = layer.keys.index_select(-2, sources[device])
            layer.values[..., prefix_length:kept_length, :] = layer.values.index_select(-2, sources[device])
    if total_length > kept_length:
        cache.crop(kept_length - total_length)


# The head's context rides on the target's cache object as an attribute, so that any cache `generate` returns (or
# is given) can carry it without a cache class of our own.
_DRAFT_CONTEXT_ATTRIBUTE = "_jetspec_draft_context"


def attach_draft_context(cache: Cache, context) -> None:
    """Store the head's `DraftContext` on `cache` for a later call that passes the same cache back."""
    setattr(cache, _DRAFT_CONTEXT_ATTRIBUTE, context)


def draft_context_of(cache: Cache):
    """The `DraftContext` stored on `cache` by an earlier tree-decoding call, or `None`."""
    return getattr(cache, _DRAFT_CONTEXT_ATTRIBUTE, None)


__all__ = ["attach_draft_context", "draft_context_of", "keep_accepted_path"]
