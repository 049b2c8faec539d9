"""Deterministic batches: which sequences every process trains on at every micro-step.

The schedule is a pure function of (seed, micro-step, process), so a resumed run sees exactly the batches the
interrupted one would have, with no data-loader state to save, and every process takes a disjoint slice of the
same per-epoch permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class Batch:
    """Right-padded token ids `[b, L]`, real `lengths [b]`, first trained position `loss_starts [b]`, and the
    dataset `indices` of the rows (to look features up in a cache). `labels [b, L]` is set when a record of the
    batch carries its own labels (see `data.target_argmax_labels`); rows without them repeat their tokens."""

    input_ids: torch.LongTensor
    lengths: torch.LongTensor
    loss_starts: torch.LongTensor
    indices: list[int]
    labels: torch.LongTensor | None = None

    def to(self, device) -> "Batch":
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(self.input_ids.to(device), self.lengths.to(device), self.loss_starts.to(device), self.indices,
                     labels)


def usable_records(records: list[dict], block_size: int, max_seq_len: int | None) -> list[dict]:
    """Records truncated to `max_seq_len` that still hold at least one full block after their loss start."""
    kept = []
    for record in records:
        ids = record["input_ids"][:max_seq_len] if max_seq_len else record["input_ids"]
        if len(ids) - block_size >= max(1, record["prompt_length"]):
            kept.append({"input_ids": ids, "prompt_length": record["prompt_length"]})
            if record.get("labels") is not None:
                kept[-1]["labels"] = record["labels"][: len(ids)]
    return kept


def collate(records: Sequence[dict], indices: Sequence[int], pad_token_id: int) -> Batch:
    """Stack `records[i]` for i in `indices` into a right-padded batch."""
    rows = [records[i]["input_ids"] for i in indices]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    loss_starts = torch.tensor([records[i]["prompt_length"] for i in indices], dtype=torch.long)
    labels = None
    if any(records[i].get("labels") is not None for i in indices):
        labels = input_ids.clone()
        for row, i in enumerate(indices):
            if records[i].get("labels") is not None:
                labels[row, : len(records[i]["labels"])] = torch.tensor(records[i]["labels"], dtype=torch.long)
    return Batch(input_ids, lengths, loss_starts, list(indices), labels)


class BatchSchedule:
    """Per-process batch indices for global micro-step g: epoch ``g // batches_per_epoch`` draws a permutation from
    ``seed + epoch``; each global batch is `per_device_batch * num_processes` consecutive entries of it, and this
    process takes its own slice. A dataset smaller than one global batch wraps around."""

    def __init__(self, num_items: int, per_device_batch: int, num_processes: int = 1, process_index: int = 0,
                 seed: int = 0):
        if num_items <= 0:
            raise ValueError("The training data holds no usable sequence.")
        self.num_items = num_items
        self.per_device_batch = per_device_batch
        self.num_processes = num_processes
        self.process_index = process_index
        self.seed = seed
        self.global_batch = per_device_batch * num_processes
        # Drop the last partial batch: every step then has the same size on every process.
        self.batches_per_epoch = max(1, num_items // self.global_batch)
        self._epoch = None
        self._permutation = None

    def _permutation_for(self, epoch: int) -> torch.Tensor:
        if self._epoch != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._permutation = torch.randperm(self.num_items, generator=generator)
            self._epoch = epoch
        return self._permutation

    def epoch_of(self, micro_step: int) -> float:
        """Fractional epoch reached after `micro_step` global micro-steps."""
        return micro_step / self.batches_per_epoch

    def indices(self, micro_step: int) -> list[int]:
        """Dataset indices this process trains on at global micro-step `micro_step`."""
        epoch, within = divmod(micro_step, self.batches_per_epoch)
        permutation = self._permutation_for(epoch)
        start = within * self.global_batch + self.process_index * self.per_device_batch
        return [int(permutation[(start + i) % self.num_items]) for i in range(self.per_device_batch)]


def shard_indices(num_items: int, num_processes: int, process_index: int) -> list[int]:
    """A round-robin slice of `range(num_items)` for one process (evaluation: every item exactly once overall)."""
    return list(range(process_index, num_items, num_processes))


__all__ = ["Batch", "BatchSchedule", "collate", "shard_indices", "usable_records"]
