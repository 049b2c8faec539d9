"""Optional wall-time accounting of the tree loop's stages, for benchmarks."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch

from ..devices import synchronize

# Stages of one round, in loop order; the prompt's prefill is accounted apart, once per generation. `compact` is a
# batch's occasional squeezing of its cache holes.
ROUND_STAGES = ("draft", "tree", "verify", "accept", "cache", "compact")


class RoundProfiler:
    """Accumulates wall time per stage of the tree loop (`prefill`, then per round `draft`, `tree`, `verify`,
    `accept`, `cache`).

    Pass one to `generate(..., round_profiler=profiler)`. On CUDA each stage is bracketed by a device
    synchronisation so that asynchronous kernels are charged to the stage that launched them; that adds syncs,
    so leave the profiler out when measuring end-to-end speed.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.rounds = 0
        self.total_seconds = 0.0

    def count(self, name: str, value: int) -> None:
        """Adds `value` to counter `name` (what a batch's ragged acceptance wastes: see `tree_decoding`)."""
        self.counts[name] += value

    @contextmanager
    def _timed(self, device: torch.device, record):
        synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(device)
            record(time.perf_counter() - start)

    def stage(self, name: str, device: torch.device):
        """Charges the enclosed work to stage `name`."""
        return self._timed(device, lambda seconds: self.seconds.__setitem__(name, self.seconds[name] + seconds))

    def generation(self, device: torch.device):
        """Brackets a whole generate call, so that time outside the named stages shows up as `other`."""

        def record(seconds):
            self.total_seconds += seconds

        return self._timed(device, record)

    def summary(self) -> dict[str, float]:
        """Seconds per stage, plus `other` (everything outside the named stages) and `total`."""
        stages = {name: self.seconds.get(name, 0.0) for name in ("prefill",) + ROUND_STAGES}
        stages["other"] = max(self.total_seconds - sum(stages.values()), 0.0)
        stages["total"] = self.total_seconds
        return stages


def stage(profiler: RoundProfiler | None, name: str, device: torch.device):
    """`profiler.stage(...)`, or a no-op context when profiling is off."""
    return nullcontext() if profiler is None else profiler.stage(name, device)


__all__ = ["ROUND_STAGES", "RoundProfiler", "stage"]
