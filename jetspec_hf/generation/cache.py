"""Cache update: keep the committed prefix plus the accepted tree nodes of each row, and what rides along."""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, StaticCache


def keep_accepted_paths(cache: Cache, prefix_length: int, paths: list[list[int]]) -> torch.Tensor | None:
    """Compact `cache` in place after a verify pass of a batch.

    Every row of the cache holds `prefix_length` columns followed by one column per tree node. Afterwards row `b`
    holds its prefix followed by the columns of `paths[b]` (root first), moved to columns `prefix_length ..`;
    every other node's column is dropped. Rows that kept fewer nodes than the longest path leave holes at the end
    of the new columns. Returns which new columns hold a row's nodes, `(B, longest)` bool, or `None` when every
    row kept as many (no holes).
    """
    longest = max(len(path) for path in paths)
    total_length = cache_length(cache)
    kept_length = prefix_length + longest
    if any(path != list(range(len(path))) for path in paths):
        # A short path is padded with its own last node: the column is a hole, its content never attended.
        padded = padded_paths(paths)
        sources: dict[torch.device, torch.Tensor] = {}  # layers split over devices each read their own copy
        for layer in cache.layers:
            device = layer.keys.device
            if device not in sources:
                sources[device] = torch.tensor(padded, device=device) + prefix_length
            for states in (layer.keys, layer.values):
                # The gather copies first, so overlapping source and destination columns are safe.
                index = sources[device][:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])
                states[:, :, prefix_length:kept_length] = states.gather(2, index)
    if total_length > kept_length:
        cache.crop(kept_length - total_length)
    if all(len(path) == longest for path in paths):
        return None
    lengths = torch.tensor([len(path) for path in paths])
    return torch.arange(longest)[None, :] < lengths[:, None]


def cache_length(cache: Cache) -> int:
    """Columns the cache holds, as an int (a static cache counts them in a tensor)."""
    return int(cache.get_seq_length())


def truncate_cache(cache: Cache, length: int) -> None:
    """Drop the columns after the first `length` (`crop` takes the number to drop, negated; a `crop(0)` would drop
    them all, so nothing is called when there is nothing to drop)."""
    extra = cache_length(cache) - length
    if extra > 0:
        cache.crop(-extra)


def static_capacity(cache: Cache) -> int | None:
    """The columns a static cache can hold at most, or `None` for a cache that grows."""
    if isinstance(cache, StaticCache):
        return cache.layers[0].max_cache_len
    return None


def prepare_static_cache(cache: Cache, target, batch_size: int) -> None:
    """Allocate a static cache's tensors now, outside inference mode: tensors allocated inside it could not be
    updated in place by a later plain `generate` continuing from the returned cache."""
    if isinstance(cache, StaticCache) and not cache.layers[0].is_initialized:
        shape = target._get_static_cache_init_shape()
        if shape is not None:
            num_heads, head_dim = shape
            device = target.get_input_embeddings().weight.device
            cache.early_initialization(batch_size, num_heads, head_dim, target.dtype, device)


def padded_paths(paths: list[list[int]]) -> list[list[int]]:
    """Every row's kept node indices, a short row padded with its own last node up to the longest row."""
    longest = max(len(path) for path in paths)
    return [path + path[-1:] * (longest - len(path)) for path in paths]


def compaction_order(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each row's valid columns come from once the holes are squeezed out, and which new columns are valid.

    Returns `order` `(B, kept)`, each row's valid column indices first and in order (a stable sort by (hole,
    column)), cut to the longest row's count, and the new `(B, kept)` valid mask.
    """
    length = valid.shape[1]
    counts = valid.sum(dim=1)
    kept = int(counts.max())
    order = torch.argsort((~valid).to(torch.int64) * length + torch.arange(length, device=valid.device))[:, :kept]
    return order, torch.arange(kept, device=valid.device)[None, :] < counts[:, None]


def select_cache_rows(cache: Cache, rows: list[int]) -> None:
    """Keep only these batch rows of `cache` (finished sequences leave the batch)."""
    cache.batch_select_indices(torch.tensor(rows, device=cache.layers[0].keys.device))


def compact_cache(cache: Cache, valid: torch.Tensor) -> torch.Tensor:
    """Move every row's valid columns to the front, in order, dropping the holes; returns the new `valid`.

    Keys carry their rotary positions already, so moving a column does not change what it means.
    """
    order, new_valid = compaction_order(valid)
    for layer in cache.layers:
        for name in ("keys", "values"):
            states = getattr(layer, name)
            index = order.to(states.device)[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])
            setattr(layer, name, states.gather(2, index))
    return new_valid


# The head's context rides on the target's cache object as an attribute, so that any cache `generate` returns (or
# is given) can carry it without a cache class of our own.
_DRAFT_CONTEXT_ATTRIBUTE = "_jetspec_draft_context"


def attach_draft_context(cache: Cache, context) -> None:
    """Store the head's `DraftContext` on `cache` for a later call that passes the same cache back."""
    setattr(cache, _DRAFT_CONTEXT_ATTRIBUTE, context)


def draft_context_of(cache: Cache):
    """The `DraftContext` stored on `cache` by an earlier tree-decoding call, or `None`."""
    return getattr(cache, _DRAFT_CONTEXT_ATTRIBUTE, None)


__all__ = [
    "attach_draft_context",
    "cache_length",
    "prepare_static_cache",
    "static_capacity",
    "truncate_cache",
    "compact_cache",
    "compaction_order",
    "padded_paths",
    "draft_context_of",
    "keep_accepted_paths",
    "select_cache_rows",
]
