"""What a round costs: the target's verify forward by node count and prefix length, the head's draft, the loop.

The verify table is measured once per (target shape, device, dtype) and process (`budget/measurement.py`); the draft,
the loop's own overhead and any drift of the table are learnt from the rounds themselves (`RoundCosts`), because
they depend on the head, the sampling settings and whatever else the machine is doing.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

# Node counts the verify forward is timed at; other sizes are interpolated between them.
MEASURED_NODE_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# `RoundCosts`: weight of the past per round, and how many rounds' worth of evidence the start-up measurement counts.
FORGETTING = 0.95
PRIOR_ROUNDS = 2.0


@dataclass(frozen=True)
class VerifyCosts:
    """Seconds of one verify forward, measured at a few prefix lengths and node counts.

    Attributes:
        node_counts: increasing node counts (tree sizes, root included), starting at 1.
        prefix_lengths: increasing committed prefix lengths the forward ran on top of.
        seconds: `seconds[i][j]`, the forward of `node_counts[j]` nodes on a `prefix_lengths[i]`-position cache.
    """

    node_counts: tuple[int, ...]
    prefix_lengths: tuple[int, ...]
    seconds: tuple[tuple[float, ...], ...]

    def __post_init__(self):
        table = np.asarray(self.seconds, dtype=np.float64)
        if self.node_counts[0] != 1 or list(self.node_counts) != sorted(set(self.node_counts)):
            raise ValueError(f"node_counts must increase from 1, got {self.node_counts}.")
        if list(self.prefix_lengths) != sorted(set(self.prefix_lengths)):
            raise ValueError(f"prefix_lengths must increase, got {self.prefix_lengths}.")
        if table.shape != (len(self.prefix_lengths), len(self.node_counts)) or not (table > 0).all():
            raise ValueError("seconds must hold one positive time per (prefix length, node count).")
        # Timing noise only ever adds time, so a cost above a larger tree's or a longer prefix's is noise: keep
        # the lower. The table then never falls with the node count or the prefix length.
        table = np.minimum.accumulate(table[:, ::-1], axis=1)[:, ::-1]
        table = np.minimum.accumulate(table[::-1], axis=0)[::-1]
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_rows", table.tolist())

    def __deepcopy__(self, memo) -> VerifyCosts:
        # Immutable: copies of a learnt state share the table, and the table's identity says which measurement it is.
        return self

    @property
    def max_nodes(self) -> int:
        return self.node_counts[-1]

    def at(self, sizes: np.ndarray, prefix_length: int) -> np.ndarray:
        """Seconds of a verify of each of `sizes` nodes (each in 1..max_nodes) on a `prefix_length` prefix.

        Linear between measured node counts and between measured prefix lengths (attention grows linearly with the
        prefix); beyond the longest measured prefix the last segment's slope continues.
        """
        table, prefixes = self._table, self.prefix_lengths
        if len(prefixes) == 1 or prefix_length <= prefixes[0]:
            row = table[0]
        else:
            upper = min(int(np.searchsorted(prefixes, prefix_length)), len(prefixes) - 1)
            lower = upper - 1
            fraction = (prefix_length - prefixes[lower]) / (prefixes[upper] - prefixes[lower])
            row = table[lower] + fraction * (table[upper] - table[lower])
        return np.interp(sizes, self.node_counts, row)

    def seconds_at(self, nodes: int, prefix_length: int) -> float:
        """`at` for one size, in plain Python: the loop asks for it every round, where NumPy's call overhead shows."""
        rows, prefixes = self._rows, self.prefix_lengths
        if len(prefixes) == 1 or prefix_length <= prefixes[0]:
            return self._along_nodes(rows[0], nodes)
        upper = min(bisect.bisect_left(prefixes, prefix_length), len(prefixes) - 1)
        fraction = (prefix_length - prefixes[upper - 1]) / (prefixes[upper] - prefixes[upper - 1])
        lower = self._along_nodes(rows[upper - 1], nodes)
        return lower + fraction * (self._along_nodes(rows[upper], nodes) - lower)

    def _along_nodes(self, row: list[float], nodes: int) -> float:
        counts = self.node_counts
        if len(counts) == 1:
            return row[0]
        upper = min(max(bisect.bisect_left(counts, nodes), 1), len(counts) - 1)
        low, high = counts[upper - 1], counts[upper]
        return row[upper - 1] + (min(max(nodes, low), high) - low) / (high - low) * (row[upper] - row[upper - 1])

    def to_dict(self) -> dict:
        return {"node_counts": list(self.node_counts), "prefix_lengths": list(self.prefix_lengths),
                "seconds": [list(row) for row in self.seconds]}

    @classmethod
    def from_dict(cls, data: dict) -> VerifyCosts:
        return cls(tuple(data["node_counts"]), tuple(data["prefix_lengths"]),
                   tuple(tuple(row) for row in data["seconds"]))


class RoundCosts:
    """Seconds of a round as the loop spends them, learnt online on top of a measured `VerifyCosts`.

    A round costs `draft` (the head's forward and the tree, drafted rounds only) plus `scale * verify(N, P) +
    overhead` (the verify forward as measured, times a drift factor, plus the walk, the cache update and the rest of
    the loop). `draft` follows the drafted rounds' times (an exponential average). `scale` and `overhead` fit each
    round's time after its draft against the table's verify time for that round by least squares, past rounds
    weighted down geometrically, pulled toward the measurement (scale 1, no overhead) with the weight of
    `PRIOR_ROUNDS` rounds: that pull also settles the fit while every round verifies the same size.

    Args:
        verify: the measured verify table.
        draft_seconds: the measured head forward, the draft estimate until drafted rounds are timed.
    """

    def __init__(self, verify: VerifyCosts, draft_seconds: float):
        self.verify = verify
        self.draft = draft_seconds
        self.scale = 1.0
        self.overhead = 0.0
        self.rounds = 0
        # The pull toward (1, 0): on the scale in units of a one-node verify, on the overhead as plain rounds.
        one_node = verify.seconds_at(1, 0)
        self._scale_pull, self._overhead_pull = PRIOR_ROUNDS * one_node * one_node, PRIOR_ROUNDS
        # Forgotten sums (weight, x, y, xx, xy) of the rounds: y measured after the draft, x the table's verify.
        self._sums = [0.0] * 5

    def round_seconds(self, sizes: np.ndarray, prefix_length: int, drafted: bool) -> np.ndarray:
        """Predicted seconds of a round verifying each of `sizes` nodes on a `prefix_length` prefix."""
        seconds = self.scale * self.verify.at(sizes, prefix_length) + self.overhead
        return seconds + self.draft if drafted else seconds

    def round_seconds_at(self, nodes: int, prefix_length: int, drafted: bool) -> float:
        """`round_seconds` for one size, in plain Python (asked every round)."""
        seconds = self.scale * self.verify.seconds_at(nodes, prefix_length) + self.overhead
        return seconds + self.draft if drafted else seconds

    def record(self, nodes: int, prefix_length: int, after_draft_seconds: float, draft_seconds: float | None) -> None:
        """One finished round: `after_draft_seconds` from the end of the draft (or the round's start) to the next
        round's start, and the draft's seconds for a drafted round."""
        if draft_seconds is not None:
            self.draft += 0.2 * (draft_seconds - self.draft)
        x, y, keep = self.verify.seconds_at(nodes, prefix_length), after_draft_seconds, FORGETTING
        self._sums = [keep * total + new for total, new in zip(self._sums, (1.0, x, y, x * x, x * y))]
        self.rounds += 1
        weight, sum_x, sum_y, sum_xx, sum_xy = self._sums
        # The normal equations of the pulled least squares, solved for (scale, overhead).
        xx, x1, ones = sum_xx + self._scale_pull, sum_x, weight + self._overhead_pull
        xy, y1 = sum_xy + self._scale_pull, sum_y
        determinant = xx * ones - x1 * x1
        self.scale = max((xy * ones - x1 * y1) / determinant, 0.0)
        self.overhead = max((xx * y1 - x1 * xy) / determinant, 0.0)


__all__ = ["MEASURED_NODE_COUNTS", "RoundCosts", "VerifyCosts"]
