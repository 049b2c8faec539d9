"""`tree_budget="auto"`: each round's tree size from this machine's measured costs and the head's calibrated confidence.

A round that verifies N nodes commits, on average, one token plus the expected number of accepted draft tokens
E(N) (the calibrated sum of the first N nodes' path probabilities, `budget/calibration.py`), and costs the head's draft, a
verify forward of N nodes on the current prefix, and the loop's overhead (`budget/costs.py`). Each round `AutoBudget`
verifies the N, among a few bucketed sizes, that commits the most tokens per second: the largest
`(1 + E(N)) / seconds(N, prefix length)`. Node-level trees are nested, so the tree is grown once to a cap and cut to
N (`budget.py`); the cap follows the sizes chosen lately, with room to grow.

Before drafting, the same comparison decides whether to draft at all: plain decoding (the root alone, no head
forward) commits one token per one-node round, and a draft pays only when the best tree's rate, predicted from the
recent rounds' calibrated expectations, beats that. When it does not (sampling at a high temperature, a long
context on a CPU, unpredictable text), the policy verifies the root alone and drafts only every k-th round to see
whether drafts would pay again: k doubles while they do not and falls back to 1 as soon as they do; once drafts
have not paid for a while, k is also never so small that probes cost more than 1% of the time (a probe after a long
stretch without drafts also catches the head's context up on every position since, which at a long prompt costs
several plain steps). A probe that clearly paid is followed by another at once, and where drafting paid in a good
share of recent rounds a call's first round probes (a new prompt is new text). Probe rounds also keep the
calibration current. A fresh calibration drafts its first `WARMUP_ROUNDS` rounds regardless, since until then its
expectations are the prior's, not the head's.

A batch decides together: its rows share each round's verify forward, whose cost is that of rows × N nodes (the
one-row table read at rows × N, which the rounds' own times then correct), so every row verifies the same N and
drafts or not together. A batch lasts as long as its slowest row, so the row expected to accept least sets the
expectation N is chosen by; every row's tree and accepted length calibrate the head.

What one (head, target, device, decoding settings, batch size) has learnt carries over to the next `generate` call
in the same process (`AutoBudgetState`); the verify table is measured once per process (`budget/measurement.py`), and
measured again when the rounds' own times drift far from it.
"""

from __future__ import annotations

import copy
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from transformers import PreTrainedModel

from ...modeling_jetspec import JetSpecDraftModel
from ..settings import GenerateOptions, TreeSettings
from ..tree import DraftTree
from .calibration import ConfidenceCalibration, TreeArrays
from .costs import RoundCosts
from .measurement import cost_signature, forget_verify_costs, measure_draft_seconds, verify_costs_for
from .policy import AUTO_BUDGET

# Sizes a round may verify: powers of two and the sizes half-way between them.
BUCKET_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
# The tree is grown to at most twice the largest size chosen in the last few rounds, and never below these.
FIRST_CAP, SMALLEST_CAP, CAP_MEMORY = 64, 16, 8
# Drafted rounds a fresh calibration sees before the expectations may stop drafting: until then they are the prior's.
WARMUP_ROUNDS = 8
# Rounds between probe drafts while drafting does not pay: doubling after each probe that says so, up to
# `MAX_PROBE_INTERVAL`; from there on never so few that probes cost more than `PROBE_SHARE` of the time (a probe
# after a long stretch without drafts also projects every position since into the head's context), up to
# `MAX_PROBE_WAIT`.
MAX_PROBE_INTERVAL, PROBE_SHARE, MAX_PROBE_WAIT = 64, 0.01, 1024
# Where at least this share of the last ~`PAYING_SHARE_MEMORY` rounds drafted because it paid, a call's first round
# drafts even while drafting had stopped paying: a new prompt is new text.
NEW_TEXT_PROBE_SHARE, PAYING_SHARE_MEMORY = 0.25, 128
# Drafting must promise this many times plain decoding's rate: near break-even the prediction's errors would cost
# more than the little there is to gain.
DRAFT_MARGIN = 1.05
# A probe "paid" when the plain rounds it replaced would have taken this many times its own time.
PROBE_PAID_FACTOR = 1.5
# Weight of the newest drafted round in the expectation curve that decides whether to draft, and of the newest
# probe in the probes' cost.
OUTLOOK_WEIGHT = 0.5
# Rounds' verify times this many times off the table (either way), after `DRIFT_ROUNDS` rounds, mean the table no
# longer describes the machine: the next call measures it again (smaller drifts are absorbed by the learnt scale).
DRIFT_FACTOR, DRIFT_ROUNDS = 2.0, 64
# A probe or warm-up round verifies at least this many nodes, so that the calibration learns from it (the draft is
# paid for already, and a few more nodes cost little).
EXPLORING_SIZE = 4


@dataclass
class AutoBudgetState:
    """What `AutoBudget` has learnt about one (head, target, device, decoding settings), carried between calls.

    Attributes:
        costs: the round cost model (measured verify table, learnt draft, drift and overhead).
        calibration: the head's calibrated confidence.
        outlook: expected accepted draft tokens per bucket size, averaged over recent drafted rounds (`None`
            before the first).
        cap: how many nodes the next tree is grown to.
        recent_sizes: the sizes the last drafted rounds chose.
        rounds_without_draft: rounds since drafting stopped paying (0 while it pays).
        probe_interval: rounds between probe drafts while drafting does not pay.
        probe_seconds: what a probe round cost beyond the plain rounds it replaced (averaged).
        probe_paid: whether the last probe committed tokens faster than plain rounds (then the next round probes
            again, so that a calibration learnt on poorer text catches up within rounds).
        paying_share: the share of recent rounds that drafted because drafting paid.
    """

    costs: RoundCosts
    calibration: ConfidenceCalibration
    outlook: np.ndarray | None = None
    cap: int = FIRST_CAP
    recent_sizes: deque = field(default_factory=lambda: deque(maxlen=CAP_MEMORY))
    rounds_without_draft: int = 0
    probe_interval: int = 1
    probe_seconds: float = 0.0
    probe_paid: bool = False
    paying_share: float = 0.0


@dataclass
class _RoundTiming:
    start: float
    prefix_length: int
    rows: int = 1
    probe: bool = False
    exploring: bool = False
    # Whether the round before it (in this call) drafted too: only then is the draft a round's own cost, without
    # catching the head's context up on the positions committed since it last drafted.
    steady_draft: bool = False
    drafted_at: float | None = None
    # Verify slots of the round (rows × the widest tree) and tokens committed per row.
    nodes: int = 1
    committed: float = 1.0


class AutoBudget:
    """The `BudgetPolicy` of `tree_budget="auto"` (see the module doc).

    Args:
        state: what earlier calls learnt (this policy updates it in place).
        publish: called with the updated state after every round, to hand it to later calls.
        on_drift: called once when the rounds' verify times drift away from the measured table.
        clock: seconds, monotonic (a stand-in in tests).

    Attributes:
        rows: sequences in the current round.
    """

    predicts_acceptance = True

    def __init__(
        self,
        state: AutoBudgetState,
        publish: Callable[[AutoBudgetState], None] | None = None,
        on_drift: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.state = state
        self._bucket_sizes = np.array([size for size in BUCKET_SIZES if size <= state.costs.verify.max_nodes])
        self._set_rows(1)
        self._publish = publish
        self._on_drift = on_drift
        self._clock = clock
        # This round's drafted trees as arrays (None for a row without a draft) and each row's expectation.
        self._trees: list[TreeArrays | None] = []
        self._expected: list[float] = []
        self._current: _RoundTiming | None = None
        self._finished: _RoundTiming | None = None
        self._first_round = True

    def _set_rows(self, rows: int) -> None:
        """A round of `rows` sequences: it may verify the bucketed sizes whose rows × size nodes the table covers."""
        self.rows = rows
        sizes = self._bucket_sizes[self._bucket_sizes * rows <= self.state.costs.verify.max_nodes]
        self.sizes = sizes if len(sizes) else self._bucket_sizes[:1]

    @property
    def max_budget(self) -> int:
        """How many nodes to grow this round's tree to (1 when no tree can ever pay on this machine)."""
        largest = int(self.sizes[-1])
        return largest if largest == 1 else max(2, min(self.state.cap, largest))

    def wants_draft(self, positions: list[int]) -> bool:
        now = self._clock()
        prefix_length = max(positions)
        if len(positions) != self.rows:
            self._set_rows(len(positions))
        drafted_before = self._finished is not None and self._finished.drafted_at is not None
        self._close_round(now)
        self._current = _RoundTiming(start=now, prefix_length=prefix_length, rows=self.rows,
                                     steady_draft=drafted_before)
        self._trees, self._expected = [], []
        if self.max_budget == 1:
            return False
        state = self.state
        first_round, self._first_round = self._first_round, False
        if state.rounds_without_draft:
            # Not drafting: without new drafts the outlook has not changed, so only a probe asks again. A call's
            # prompt is new text, though: where drafts have often paid lately, its first round asks at once.
            state.rounds_without_draft += 1
            new_text = first_round and state.paying_share >= NEW_TEXT_PROBE_SHARE
            if not new_text and state.rounds_without_draft <= self._probe_wait(prefix_length):
                return self._decided(False)
            state.probe_interval = min(2 * state.probe_interval, MAX_PROBE_INTERVAL)
            state.rounds_without_draft = 0
            self._current.probe = self._current.exploring = True
            return self._decided(True, paying=False)
        warming_up = state.outlook is None or state.calibration.rounds < WARMUP_ROUNDS
        if warming_up or self._drafting_pays(prefix_length):
            state.probe_interval = 1
            self._current.exploring = warming_up
            return self._decided(True, paying=not warming_up)
        state.rounds_without_draft = 1
        return self._decided(False)

    def choose(self, trees: list[DraftTree], positions: list[int]) -> list[int]:
        if self._current is not None:
            self._current.drafted_at = self._clock()
        state = self.state
        drafted = [index for index, tree in enumerate(trees) if len(tree) > 1]
        if not drafted:
            return [len(tree) for tree in trees]
        prefix_length = max(positions)
        # Every row's expectation at every bucket size (a size beyond a tree is the whole tree). The outlook keeps
        # every size (a batch that loses rows may verify larger trees later); the choice is among the sizes this
        # round's rows allow, a prefix of them, and a size beyond the widest tree costs what the widest tree costs.
        self._trees = [TreeArrays.of(tree) if len(tree) > 1 else None for tree in trees]
        curves = np.stack([state.calibration.expected_accepted(self._trees[index], self._bucket_sizes)
                           for index in drafted])
        # A batch lasts as long as its slowest row: the row expected to accept least sets the batch's pace.
        batch_curve = curves.min(axis=0)
        previous = batch_curve if state.outlook is None else state.outlook
        state.outlook = previous + OUTLOOK_WEIGHT * (batch_curve - previous)
        widest = max(len(trees[index]) for index in drafted)
        sizes = np.minimum(self.sizes, widest)
        expected = batch_curve[: len(sizes)]
        rates = (1.0 + expected) / state.costs.round_seconds(sizes * self.rows, prefix_length, drafted=True)
        if self._current is not None and self._current.exploring:
            rates[sizes < min(EXPLORING_SIZE, widest)] = 0.0
        best = int(np.argmax(rates))
        chosen = int(sizes[best])
        chosen_sizes = [min(chosen, len(tree)) for tree in trees]
        self._expected = [0.0] * len(trees)
        for row, curve in zip(drafted, curves):
            self._expected[row] = float(curve[best])
        state.recent_sizes.append(chosen)
        state.cap = self._bucket_at_least(max(SMALLEST_CAP, 2 * max(state.recent_sizes)))
        return chosen_sizes

    def observe(self, trees: list[DraftTree], accepted: list[int]) -> list[float]:
        """Learn from the finished round (every row's verified tree and accepted draft tokens); returns each row's
        calibrated expectation at the size it verified (0 for a row without a draft)."""
        # Without a draft this round (`choose` not asked), both lists are empty and nothing is learnt.
        for arrays, tree, count in zip(self._trees, trees, accepted):
            if arrays is not None:
                self.state.calibration.observe(arrays.prefix(len(tree)), count)
        # A tree the static cache cut to its root verified no draft.
        expected = [value if len(tree) > 1 else 0.0
                    for value, tree in zip(self._expected or [0.0] * len(trees), trees)]
        if self._current is not None:
            self._current.nodes = max(len(tree) for tree in trees) * len(trees)
            self._current.committed = sum(count + 1 for count in accepted) / len(trees)
            self._finished, self._current = self._current, None
        if self._publish is not None:
            self._publish(self.state)
        return expected

    def _decided(self, draft: bool, paying: bool | None = None) -> bool:
        """Return `draft`, keeping count of how often drafting paid (`paying` defaults to `draft`)."""
        state = self.state
        state.paying_share += ((draft if paying is None else paying) - state.paying_share) / PAYING_SHARE_MEMORY
        return draft

    def _drafting_pays(self, prefix_length: int) -> bool:
        """Whether the recent rounds' expectations say a drafted round commits tokens faster than the root alone (by
        `DRAFT_MARGIN`)."""
        costs, outlook, sizes = self.state.costs, self.state.outlook, self.sizes
        drafted = (1.0 + outlook[: len(sizes)]) / costs.round_seconds(sizes * self.rows, prefix_length, drafted=True)
        plain = costs.round_seconds_at(self.rows, prefix_length, drafted=False)
        return bool(drafted.max() * plain > DRAFT_MARGIN)

    def _probe_wait(self, prefix_length: int) -> float:
        """Rounds without a draft before the next probe."""
        state = self.state
        if state.probe_paid or state.probe_interval < MAX_PROBE_INTERVAL:
            # Drafts paid not long ago: probe on the doubling schedule, to catch a short dip's end.
            return state.probe_interval
        plain_seconds = state.costs.round_seconds_at(self.rows, prefix_length, drafted=False)
        affordable = state.probe_seconds / (PROBE_SHARE * plain_seconds)
        return max(state.probe_interval, min(affordable, MAX_PROBE_WAIT))

    def _close_round(self, now: float) -> None:
        """Time the round that finished before this one started, and learn from it."""
        finished, self._finished = self._finished, None
        if finished is None:
            return
        drafted_at = finished.drafted_at
        draft_seconds = None if drafted_at is None else drafted_at - finished.start
        after_draft = now - (finished.start if drafted_at is None else drafted_at)
        state, costs = self.state, self.state.costs
        if finished.probe:
            # Beyond the plain rounds it replaced: the draft, the larger verify, and catching the head's context up.
            round_seconds = now - finished.start
            replaced_seconds = finished.committed * costs.round_seconds_at(finished.rows, finished.prefix_length,
                                                                            drafted=False)
            extra = round_seconds - replaced_seconds
            # One round is a noisy witness: it must beat the plain rounds it replaced by half again to count.
            state.probe_paid = replaced_seconds > PROBE_PAID_FACTOR * round_seconds
            if state.probe_paid:
                state.probe_interval = 1
            elif state.probe_seconds == 0.0:
                state.probe_seconds = extra
            else:
                state.probe_seconds += OUTLOOK_WEIGHT * (extra - state.probe_seconds)
        costs.record(finished.nodes, finished.prefix_length, after_draft,
                     draft_seconds if finished.steady_draft else None)
        drifted = not 1.0 / DRIFT_FACTOR <= costs.scale <= DRIFT_FACTOR
        if drifted and costs.rounds >= DRIFT_ROUNDS and self._on_drift is not None:
            self._on_drift()
            self._on_drift = None

    def _bucket_at_least(self, size: int) -> int:
        index = min(int(np.searchsorted(self.sizes, size)), len(self.sizes) - 1)
        return int(self.sizes[index])


# Learnt states, per head (weakly: a freed head takes its states along) and per (target, device, settings).
_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def auto_budget_policy(
    target: PreTrainedModel,
    head: JetSpecDraftModel,
    options: GenerateOptions,
    tree_settings: TreeSettings,
    device: torch.device,
    batch_size: int = 1,
) -> AutoBudget:
    """The `AutoBudget` for one `generate` call: the verify table of this target and device (measured on the first
    call of the process), and what earlier calls with the same head, target, decoding settings and batch size
    learnt (a batch's round costs are its own; the head's calibration is shared across batch sizes)."""
    verify = verify_costs_for(target, head.config.target_layer_ids, device, tree_settings.depth + 1)
    setting = (tuple(sorted(cost_signature(target, device).items())), _decoding_key(options, tree_settings))
    key = (*setting, batch_size)
    states = _STATES.setdefault(head, {})
    state = states.get(key)
    if state is None or state.costs.verify is not verify:
        # A new or re-measured table, or a new batch size: fresh costs; a calibration learnt before still describes
        # the head.
        learnt = state or next((other for other_key, other in states.items() if other_key[:2] == setting), None)
        state = AutoBudgetState(
            costs=RoundCosts(verify, measure_draft_seconds(head, target, device, batch_size=batch_size)),
            calibration=copy.deepcopy(learnt.calibration) if learnt is not None else ConfidenceCalibration(),
        )
        states[key] = state

    def publish(updated: AutoBudgetState) -> None:
        states[key] = updated

    def forget() -> None:
        forget_verify_costs(target, device)

    # Each call works on its own copy: concurrent calls never interleave their updates (the last one to publish is
    # what the next call starts from).
    return AutoBudget(copy.deepcopy(state), publish=publish, on_drift=forget)


def _decoding_key(options: GenerateOptions, tree_settings: TreeSettings) -> tuple:
    """The settings that change how often the target accepts the head's tokens, as the call resolves them."""
    tree = (tree_settings.width, tree_settings.depth, tree_settings.expansion, tree_settings.lookup_tokens,
            tree_settings.draft_window)
    penalty = options.value("repetition_penalty")
    if not options.value("do_sample"):
        return ("greedy", penalty, *tree)
    warpers = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
    return ("sample", penalty, *(options.value(name) for name in warpers), *tree)


__all__ = ["AUTO_BUDGET", "AutoBudget", "AutoBudgetState", "BUCKET_SIZES", "auto_budget_policy"]
