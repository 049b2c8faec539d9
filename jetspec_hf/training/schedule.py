"""The learning-rate schedule: linear warm-up, then cosine decay to a floor.

It is transformers' `get_cosine_with_min_lr_schedule_with_warmup`, with the warm-up taken one step ahead: step `s`
of the warm-up runs at `(s + 1) / warmup` of the peak rate instead of `s / warmup`, so that the first update is not
spent at rate 0. That is the schedule the bundled heads were trained with; the decay is transformers' as it is.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_cosine_with_min_lr_schedule_with_warmup


def warmup_cosine_schedule(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> LambdaLR:
    """A `LambdaLR` over `total_steps` optimizer steps: `warmup_steps` of linear warm-up (first step at
    `1 / warmup_steps` of the peak), then cosine decay from the peak to `min_lr_ratio` of it."""
    transformers_curve = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup_steps, total_steps, min_lr_rate=min_lr_ratio
    ).lr_lambdas[0]

    def multiplier(step: int) -> float:
        return transformers_curve(step + 1) if step < warmup_steps else transformers_curve(step)

    # A new scheduler on the same optimizer: it starts from the base rates the first one recorded.
    return LambdaLR(optimizer, multiplier)


def warmup_steps_of(warmup_steps: int | None, warmup_ratio: float, total_steps: int) -> int:
    """The warm-up length: `warmup_steps` when set, else `warmup_ratio` of the run."""
    return warmup_steps if warmup_steps is not None else int(warmup_ratio * total_steps)


__all__ = ["warmup_cosine_schedule", "warmup_steps_of"]
