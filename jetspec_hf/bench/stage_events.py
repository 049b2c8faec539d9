"""Per-stage time of the tree loop without adding host synchronisations.

`RoundProfiler` synchronises the device around every stage, so that each stage is charged its own kernels; that
also stops the host from running ahead of the device, which is part of what a round costs. `EventRoundProfiler`
measures the same stages with CUDA events recorded on the stream instead (read once, after the generation), so the
loop runs as it runs unprofiled. On a CPU, where work is synchronous anyway, it reads the wall clock.

An event pair measures the device's time between the two points of the stream: for a stage that launches kernels
(draft, verify) that is its kernels plus any wait for the host to launch them; for a host-side stage (tree, accept,
cache) it is the host's time while the device waits, which is the cost that stage adds to a round.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..generation.profiling import RoundProfiler


class EventRoundProfiler(RoundProfiler):
    """A `RoundProfiler` that never synchronises inside the loop (see the module doc); `summary()` reads the events
    (one synchronisation)."""

    def __init__(self):
        super().__init__()
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event, object]] = []

    @contextmanager
    def _timed(self, device: torch.device, record):
        if device.type != "cuda":
            # Off CUDA the base class's wall-clock timing synchronises nothing either.
            with super()._timed(device, record):
                yield
            return
        start_event = torch.cuda.Event(enable_timing=True)
        start_event.record()
        try:
            yield
        finally:
            end_event = torch.cuda.Event(enable_timing=True)
            end_event.record()
            self._pending.append((start_event, end_event, record))

    def _resolve(self) -> None:
        if self._pending:
            self._pending[-1][1].synchronize()
            for start_event, end_event, record in self._pending:
                record(start_event.elapsed_time(end_event) / 1000.0)
            self._pending.clear()

    def summary(self) -> dict[str, float]:
        self._resolve()
        return super().summary()


__all__ = ["EventRoundProfiler"]
