"""Counting the tree loop's host synchronisations, per round.

On a GPU every read of a tensor's value by Python (`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool(t)`,
`int(t)`, `float(t)`, `t.__index__()`) waits for every kernel queued before it: the loop cannot run ahead of the
device past that point. `HostReadCounter` counts those reads on any device (CPU included, where they cost nothing,
which is what lets a CPU test hold the loop to its count) by wrapping the `torch.Tensor` methods while active.
`CudaSyncCounter` counts what CUDA itself reports as synchronising (`torch.cuda.set_sync_debug_mode`), which also
sees blocking host-to-device copies. `RoundSyncCounter`, passed as a `round_profiler`, splits a counter's count by
round.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from contextlib import contextmanager, nullcontext

import torch

from ...generation.profiling import RoundProfiler

# The torch.Tensor methods through which Python reads a tensor's value onto the host.
HOST_READ_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


class HostReadCounter:
    """Counts Python-level reads of tensor values while active (a context manager; not reentrant).

    It patches `torch.Tensor` for the whole process, so reads from other threads count too: use it around one
    generation at a time.

    Attributes:
        count: reads so far.
        sites: reads per `(method, "file:line")` of the caller, to find where they come from.
    """

    def __init__(self):
        self.count = 0
        self.sites: Counter = Counter()
        self._saved: dict[str, object] = {}

    def _wrapped(self, name: str, original):
        def read(tensor, *args, **kwargs):
            self.count += 1
            caller = sys._getframe(1)
            self.sites[(name, f"{caller.f_code.co_filename}:{caller.f_lineno}")] += 1
            return original(tensor, *args, **kwargs)

        return read

    def __enter__(self) -> HostReadCounter:
        for name in HOST_READ_METHODS:
            # Remember whether torch.Tensor defines the method itself or inherits it, to put back exactly that.
            self._saved[name] = torch.Tensor.__dict__.get(name)
            setattr(torch.Tensor, name, self._wrapped(name, getattr(torch.Tensor, name)))
        return self

    def __exit__(self, *exc_info) -> None:
        for name, original in self._saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
        self._saved.clear()

    def top_sites(self, limit: int = 8) -> dict[str, int]:
        """The most frequent read sites, as `"method at file:line" -> count` (paths shortened to the package)."""
        return {f"{name} at {_short_path(site)}": count for (name, site), count in self.sites.most_common(limit)}


class CudaSyncCounter:
    """Counts the operations CUDA reports as synchronising on the current device while active (device reads and
    blocking host-to-device copies alike), through `torch.cuda.set_sync_debug_mode("warn")`."""

    def __init__(self):
        self._records: list = []
        self._catcher = None
        self._mode = None

    @property
    def count(self) -> int:
        return sum("synchronizing" in str(record.message) for record in self._records)

    def __enter__(self) -> CudaSyncCounter:
        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always")
        self._mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc_info) -> None:
        torch.cuda.set_sync_debug_mode(self._mode)
        self._catcher.__exit__(*exc_info)


class RoundSyncCounter(RoundProfiler):
    """A `round_profiler` for `tree_decoding` that records how many reads `counter` saw in each round (instead of
    stage times; the loop's slot counters are kept as in any `RoundProfiler`).

    A round runs from the start of its `draft` stage to the start of the next round's `draft` stage, and the last
    one to the end of the loop: the prefill and the work after the loop are left out.

    Attributes:
        rounds: rounds run (the loop counts them).
        per_round: the counter's increase in each round.
    """

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.per_round: list[int] = []
        self._round_start: int | None = None

    @contextmanager
    def _generation(self):
        try:
            yield
        finally:
            self._close_round()

    def generation(self, device: torch.device):
        return self._generation()

    def stage(self, name: str, device: torch.device):
        if name == "draft":
            self._close_round()
            self._round_start = self.counter.count
        return nullcontext()

    def _close_round(self) -> None:
        if self._round_start is not None:
            self.per_round.append(self.counter.count - self._round_start)
            self._round_start = None


def _short_path(site: str) -> str:
    for marker in ("site-packages/", "jetspec_hf/"):
        if marker in site:
            prefix = "" if marker == "site-packages/" else "jetspec_hf/"
            return prefix + site.split(marker, 1)[1]
    return site


__all__ = ["CudaSyncCounter", "HOST_READ_METHODS", "HostReadCounter", "RoundSyncCounter"]
