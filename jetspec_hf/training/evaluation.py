"""Evaluation on held-out sequences: per-depth top-1 agreement with the labels (the target's own greedy tokens for
self-distilled data), the mean accepted length of a chain drafted from each block, and the loss.

Anchors are drawn per sequence from a seed fixed by the sequence's index, so the numbers compare across
evaluations, runs and process counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .batches import Batch, collate, shard_indices
from .objective import ObjectiveSettings, sample_anchors, summarize_agreement


def fixed_anchors(batch: Batch, settings: ObjectiveSettings, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor positions `[b, n]` and their validity mask for a batch, each row drawn from its sequence's own seed."""
    rows = []
    for row, index in enumerate(batch.indices):
        generator = torch.Generator().manual_seed(seed + 7919 * (index + 1))
        rows.append(sample_anchors(batch.lengths[row : row + 1].cpu(), batch.loss_starts[row : row + 1].cpu(),
                                   settings.block_size, settings.anchors_per_seq, generator))
    slots = max(anchors.shape[1] for anchors, _ in rows)
    anchors = torch.zeros(len(rows), slots, dtype=torch.long)
    valid = torch.zeros(len(rows), slots, dtype=torch.bool)
    for row, (row_anchors, row_valid) in enumerate(rows):
        anchors[row, : row_anchors.shape[1]], valid[row, : row_valid.shape[1]] = row_anchors[0], row_valid[0]
    return anchors, valid


@torch.no_grad()
def evaluate_head(
    accelerator,
    head: torch.nn.Module,
    records: list[dict],
    objective: Callable,
    settings: ObjectiveSettings,
    pad_token_id: int,
    batch_size: int,
    seed: int,
) -> dict | None:
    """The evaluation numbers over `records`, summed over every process; `None` when there are none.

    Args:
        accelerator: the run's `Accelerator` (each process evaluates its share; the totals are reduced).
        head: the UNWRAPPED head: a data-parallel wrapper would run collectives in every forward, and processes may
            hold different numbers of batches.
        objective: `objective(head, batch, anchors=...)` -> the `ObjectiveOutput` of one batch.
    """
    if not records:
        return None
    head.eval()
    device = accelerator.device
    depths = settings.block_size - 1
    totals = torch.zeros(2 * depths + 3, device=device)  # correct[d], count[d], accepted, blocks, loss * blocks
    mine = shard_indices(len(records), accelerator.num_processes, accelerator.process_index)
    for start in range(0, len(mine), batch_size):
        batch = collate(records, mine[start : start + batch_size], pad_token_id).to(device)
        with accelerator.autocast():
            out = objective(head, batch, anchors=fixed_anchors(batch, settings, seed))
        totals[:depths] += out.correct_per_depth
        totals[depths : 2 * depths] += out.count_per_depth
        totals[-3] += out.accepted_sum
        totals[-2] += out.num_blocks
        totals[-1] += out.loss.float() * out.num_blocks
    totals = accelerator.reduce(totals, reduction="sum")
    head.train()
    blocks = totals[-2].clamp(min=1)
    agreement = summarize_agreement(totals[:depths].cpu(), totals[depths : 2 * depths].cpu())
    return {
        "eval_loss": float(totals[-1] / blocks),
        "eval_top1_per_depth": [round(value, 4) for value in agreement],
        "eval_mean_accepted": float(totals[-3] / blocks),
        "eval_blocks": int(totals[-2]),
    }


__all__ = ["evaluate_head", "fixed_anchors"]
