"""Verification: one target forward over every tree node, each node seeing the prefix and its own ancestors.

Tensors are placed on the device of the committed ids (`device`), which is where `generate` put the inputs; a
target that is offloaded or split over devices moves them on to each module's execution device through its
accelerate hooks, exactly as for a plain forward. Nothing reads `target.device`, which is `meta` for an offloaded
target.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

from .cache import static_capacity
from .capture import TappedLayerCapture
from .tree import DraftTree
from .tree_attention import TREE_MASK_KWARG, routes_tree_attention
from .tree_mask import TreeAttentionMask


# On a CPU, the target's forward over 2 or 3 tree nodes costs more than over 4: the matmul kernels' paths for so
# few rows are slower (SmolLM2-135M-Instruct, fp32, one thread, a quiet core, a 256-token prefix: 2 / 3 / 4 nodes
# took 118-136 / 140-148 / 110 ms, and 107-109 / 106-114 ms padded to 4). Such trees are verified padded to this
# many nodes, whose outputs are never read.
CPU_MIN_TREE_ROWS = 4

# A 4D mask makes transformers' mask builders return it untouched (no causal mask is built for the verify); the
# routed attention functions never read it, they read the `TreeAttentionMask` keyword instead.
_PREPARED_MASK_PLACEHOLDER = torch.empty(1, 1, 0, 0)


def verify_trees(
    target: PreTrainedModel,
    trees: list[DraftTree],
    prefix_length: int,
    positions: list[int],
    prefix_key_mask: torch.Tensor | None,
    cache: Cache,
    capture: TappedLayerCapture,
    device: torch.device,
    forward=None,
    bucket_limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the target on every row's tree nodes on top of `cache` (which holds `prefix_length` columns).

    Row `b`'s nodes sit at positions `positions[b] + depth` and see the row's visible prefix columns
    (`prefix_key_mask`, `(B, prefix_length)` bool, `None` when all are) and exactly their own ancestors. Trees
    smaller than the largest (and, on a CPU, trees of 2 or 3 nodes: `CPU_MIN_TREE_ROWS`) are padded with nodes that
    see only themselves; their outputs are never read.

    Returns the logits of every node `(B, N, V)` (row `[b, n]` is the target's next-token logits for the path
    root→n of row b's tree) and the tapped features of every node `(B, N, k*H)`. The cache grows by N columns, in
    node order.

    The attention of every backend but eager is routed to `tree_attention_forward` for this forward only (prefix
    and tree attended apart, no `N × (P + N)` mask); an eager target gets the materialised additive mask.
    `forward` replaces `target.__call__` (a compiled forward of a static-cache target): then N is padded up to a
    power of two and the mask is materialised over the whole static cache, so that shapes repeat and a few compiled
    graphs serve every round. Where the static cache's free columns (`bucket_limit`) cannot take the padded tree
    (the last rounds), the tree runs uncompiled at its own size rather than compiling one more shape.
    """
    size = max(len(tree) for tree in trees)
    if device.type == "cpu" and 1 < size < CPU_MIN_TREE_ROWS:
        capacity = static_capacity(cache)  # a static cache's free columns bound the padding
        size = CPU_MIN_TREE_ROWS if capacity is None else max(size, min(CPU_MIN_TREE_ROWS, capacity - prefix_length))
    if forward is not None:
        bucket = 1 << (size - 1).bit_length()
        if bucket_limit is not None and bucket > bucket_limit:
            forward = target.__call__
        else:
            size = bucket
    tokens, depths = [], []
    ancestors = np.zeros((len(trees), 1, size, size), dtype=bool)
    for row, tree in enumerate(trees):
        padding = size - len(tree)
        tokens.append(tree.tokens + [tree.tokens[0]] * padding)
        depths.append([positions[row] + depth for depth in tree.depths] + [positions[row]] * padding)
        ancestors[row, 0, : len(tree), : len(tree)] = tree.ancestor_matrix()
        ancestors[row, 0, len(tree) :, len(tree) :] = np.eye(padding, dtype=bool)
    if len(trees) == 1:
        ancestors = ancestors[0, 0]  # one tree: the (N, N) form every row shares
    mask = TreeAttentionMask.from_ancestors(ancestors, prefix_length, device, prefix_key_mask)
    key_length = static_capacity(cache)
    if forward is None and routes_tree_attention(target.config._attn_implementation):
        attention = {"attention_mask": _PREPARED_MASK_PLACEHOLDER, TREE_MASK_KWARG: mask}
    else:
        additive = mask.to_additive_mask(target.dtype)
        if key_length is not None and key_length > additive.shape[-1]:
            # A static cache attends over all its columns: the ones past the tree hold nothing yet.
            hidden = additive.new_full((*additive.shape[:-1], key_length - additive.shape[-1]),
                                       torch.finfo(target.dtype).min)
            additive = torch.cat([additive, hidden], dim=-1)
        attention = {"attention_mask": additive}
    outputs = (forward or target)(
        input_ids=torch.tensor(tokens, device=device),
        position_ids=torch.tensor(depths, device=device),
        cache=cache,
        use_cache=True,
        logits_to_keep=0,
        **attention,
    )
    return outputs.logits, capture.features()


def verify_tree(
    target: PreTrainedModel,
    tree: DraftTree,
    prefix_length: int,
    cache: Cache,
    capture: TappedLayerCapture,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`verify_trees` for one sequence whose cache holds its `prefix_length` positions, no holes: logits `(N, V)`,
    features `(1, N, k*H)`."""
    logits, features = verify_trees(target, [tree], prefix_length, [prefix_length], None, cache, capture, device)
    return logits[0], features


def prefill(
    target: PreTrainedModel,
    input_ids: torch.Tensor,
    cache: Cache,
    capture: TappedLayerCapture,
    attention_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the columns of `input_ids` `(B, n)` to `cache`, `chunk_size` columns per forward (`generate`'s
    `prefill_chunk_size`; all at once when `None`).

    `attention_mask` `(B, cached + n)` marks padding as plain decoding's does (`None`: no padding); positions
    count each row's real tokens, as `generate` numbers them. Returns the target's next-token logits after the last
    column `(B, V)` (only that column goes through the lm_head) and the tapped features of every column
    `(B, n, k*H)`.
    """
    cached = int(cache.get_seq_length())
    if attention_mask is None:
        positions = torch.arange(cached, cached + input_ids.shape[1], device=input_ids.device)[None]
        positions = positions.expand(input_ids.shape[0], -1)
    else:
        positions = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)[:, cached:]
    chunk_size = chunk_size or input_ids.shape[1]
    features = []
    for start in range(0, input_ids.shape[1], chunk_size):
        end = min(start + chunk_size, input_ids.shape[1])
        mask = None if attention_mask is None else attention_mask[:, : cached + end]
        outputs = target(
            input_ids=input_ids[:, start:end], position_ids=positions[:, start:end], attention_mask=mask,
            cache=cache, use_cache=True, logits_to_keep=1,
        )
        features.append(capture.features())
    return outputs.logits[:, -1], torch.cat(features, dim=1) if len(features) > 1 else features[0]


__all__ = ["prefill", "verify_tree", "verify_trees"]
