"""Cache update: keep the committed prefix plus the accepted tree nodes, contiguously (DESIGN §4)."""

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
        device = cache.layers[0].keys.device
        source = torch.tensor(path, device=device) + prefix_length
        for layer in cache.layers:
            # index_select copies first, so overlapping source and destination slots are safe.
            layer.keys[..., prefix_length:kept_length, :] = layer.keys.index_select(-2, source)
            layer.values[..., prefix_length:kept_length, :] = layer.values.index_select(-2, source)
    if total_length > kept_length:
        cache.crop(kept_length - total_length)


__all__ = ["keep_accepted_path"]
