"""Verification: one target forward over every tree node, each node seeing the prefix and its own ancestors.

Tensors are placed on the device of the committed ids (`device`), which is where `generate` put the inputs; a
target that is offloaded or split over devices moves them on to each module's execution device through its
accelerate hooks, exactly as for a plain forward. Nothing reads `target.device`, which is `meta` for an offloaded
target.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

from .capture import TappedLayerCapture
from .tree import DraftTree
from .tree_attention import TREE_MASK_KWARG, TreeAttentionMask, routes_tree_attention


# A 4D mask makes transformers' mask builders return it untouched (no causal mask is built for the verify); the
# routed attention functions never read it, they read the `TreeAttentionMask` keyword instead.
_PREPARED_MASK_PLACEHOLDER = torch.empty(1, 1, 0, 0)


def verify_tree(
    target: PreTrainedModel,
    tree: DraftTree,
    prefix_length: int,
    cache: Cache,
    capture: TappedLayerCapture,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the target on the tree nodes on top of `cache` (which holds `prefix_length` committed positions).

    Returns the logits of every node `(N, V)` (row `n` is the target's next-token logits for the path root→n) and
    the tapped features of every node `(1, N, k*H)`. The cache grows by N rows, in node order.

    The attention of every backend but eager is routed to `tree_attention_forward` for this forward only (prefix
    and tree attended apart, no `N × (P + N)` mask); an eager target gets the materialised additive mask.
    """
    tokens = torch.tensor([tree.tokens], device=device)
    position_ids = torch.tensor([tree.depths], device=device) + prefix_length
    mask = TreeAttentionMask.from_ancestors(tree.ancestor_matrix(), prefix_length, device)
    if routes_tree_attention(target.config._attn_implementation):
        attention = {"attention_mask": _PREPARED_MASK_PLACEHOLDER, TREE_MASK_KWARG: mask}
    else:
        attention = {"attention_mask": mask.to_additive_mask(target.dtype)}
    outputs = target(
        input_ids=tokens, position_ids=position_ids, cache=cache, use_cache=True, logits_to_keep=0, **attention
    )
    return outputs.logits[0], capture.features()


def prefill(
    target: PreTrainedModel,
    input_ids: torch.Tensor,
    start_position: int,
    cache: Cache,
    capture: TappedLayerCapture,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append `input_ids` to `cache`, at positions from `start_position` on, `chunk_size` tokens per forward
    (`generate`'s `prefill_chunk_size`; all at once when `None`).

    Returns the target's next-token logits after the last id `(1, V)` (only that row goes through the lm_head) and
    the tapped features of every id `(1, L, k*H)`.
    """
    chunks = [input_ids] if chunk_size is None else torch.split(input_ids, chunk_size, dim=1)
    features, position = [], start_position
    for chunk in chunks:
        positions = torch.arange(position, position + chunk.shape[1], device=chunk.device).unsqueeze(0)
        outputs = target(input_ids=chunk, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        features.append(capture.features())
        position += chunk.shape[1]
    return outputs.logits[0, -1:], torch.cat(features, dim=1) if len(features) > 1 else features[0]


__all__ = ["prefill", "verify_tree"]
