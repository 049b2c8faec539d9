"""Verification: one target forward over every tree node, with a tree-shaped attention mask (DESIGN §4)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

from .capture import TappedLayerCapture
from .tree import DraftTree


def tree_attention_mask(tree: DraftTree, prefix_length: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive mask `(1, 1, N, prefix_length + N)`: each node sees the whole prefix and exactly its ancestors.

    Additive (0 / dtype min) rather than bool because the eager backend adds a bool mask as 0/1.
    """
    ancestors = tree.ancestor_matrix(device)
    mask = torch.zeros(1, 1, len(tree), prefix_length + len(tree), dtype=dtype, device=device)
    mask[0, 0, :, prefix_length:].masked_fill_(~ancestors, torch.finfo(dtype).min)
    return mask


@torch.no_grad()
def verify_tree(
    target: PreTrainedModel,
    tree: DraftTree,
    prefix_length: int,
    cache: Cache,
    capture: TappedLayerCapture,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the target on the tree nodes on top of `cache` (which holds `prefix_length` committed positions).

    Returns the float32 logits of every node `(N, V)` (row `n` is the target's next-token logits for the path
    root→n) and the tapped features of every node `(1, N, k*H)`. The cache grows by N rows, in node order.
    """
    device = target.device
    tokens = torch.tensor([tree.tokens], device=device)
    position_ids = torch.tensor([tree.depths], device=device) + prefix_length
    mask = tree_attention_mask(tree, prefix_length, target.dtype, device)
    outputs = target(
        input_ids=tokens,
        position_ids=position_ids,
        attention_mask=mask,
        cache=cache,
        use_cache=True,
        logits_to_keep=0,
    )
    return outputs.logits[0].float(), capture.features()


@torch.no_grad()
def prefill(
    target: PreTrainedModel, input_ids: torch.Tensor, cache: Cache, capture: TappedLayerCapture
) -> torch.Tensor:
    """Fill `cache` with `input_ids` through the target's base model (no lm_head); return their tapped features."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    target.model(input_ids=input_ids, position_ids=positions, cache=cache, use_cache=True)
    return capture.features()


__all__ = ["prefill", "tree_attention_mask", "verify_tree"]
