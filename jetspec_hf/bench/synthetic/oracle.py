"""An oracle drafter: the real head's forward, with logits that make each round accept a chosen number of tokens.

To measure what the tree loop gives at a given τ without a trained head, `OracleDrafter` runs the real head
forward every round (so drafting costs what it costs) and then rewrites the returned per-depth logits. It knows
the target's own greedy continuation (from a plain greedy run of the same prompt) and, from the context it has been
given, where the round's anchor sits in it. Each round it draws how many depths to plant: the true token of each
planted depth is raised far above every other logit of its row, so the tree grown from the logits holds the true
path down to that depth; the true token of the next depth is pushed below every other logit, out of the tree's
reach (the tree takes each depth's top `tree_width` tokens). The verify then accepts exactly the planted depths, as
long as the budget holds them, and commits one more token of its own.

Depth d is planted with probability `acceptance[d - 1]` given that depths 1..d-1 were, so a constant acceptance p
gives τ = 1 + p + p² + ... + p^D (D: the deepest depth a round can accept). `acceptance_for_tau` solves that for p.
The draw uses one uniform number per round from a Weyl sequence (quasi-random: its running mean converges like
1/rounds rather than 1/sqrt(rounds)), so a short generation lands close to the forced τ.

Every rewrite is a device operation indexed by host integers: the oracle adds no host synchronisation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from ...generation.drafting import DraftContext, HeadDrafter

# Logit units by which a planted token clears (and a pushed-out token falls under) every other logit of its row:
# exp(-30) * 151936 tokens leaves a planted token a probability above 1 - 2e-8.
PLANT_MARGIN = 30.0
_GOLDEN_FRACTION = (math.sqrt(5.0) - 1.0) / 2.0


def expected_tau(acceptance: Sequence[float], max_accepted: int) -> float:
    """Tokens committed per round on average: 1 + Σ_d P(depths 1..d all planted), for d up to `max_accepted`."""
    survival, tau = 1.0, 1.0
    for depth in range(max_accepted):
        survival *= acceptance[min(depth, len(acceptance) - 1)]
        tau += survival
    return tau


def acceptance_for_tau(tau: float, max_accepted: int) -> float:
    """The per-depth acceptance p (the same at every depth) that commits `tau` tokens per round on average when a
    round can accept at most `max_accepted` draft tokens (the tree's depth, and at most budget - 1)."""
    if max_accepted < 0 or not 1.0 <= tau <= 1.0 + max_accepted:
        raise ValueError(f"τ = {tau} cannot be forced when a round accepts at most {max_accepted} draft tokens "
                         f"(τ must lie in [1, {1 + max_accepted}]).")
    low, high = 0.0, 1.0
    for _ in range(60):  # expected_tau rises with p; 60 halvings reach float precision
        middle = (low + high) / 2.0
        if expected_tau([middle], max_accepted) < tau:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


class AcceptanceSchedule:
    """How many depths each round plants: depth d with probability `acceptance[d - 1]` given depths < d.

    Args:
        acceptance: per-depth conditional acceptance; the last value holds for deeper depths.
        seed: picks the start of the Weyl sequence.
    """

    def __init__(self, acceptance: Sequence[float], seed: int = 0):
        if not acceptance or any(not 0.0 <= p <= 1.0 for p in acceptance):
            raise ValueError(f"acceptance must be probabilities, got {list(acceptance)}")
        self.acceptance = list(acceptance)
        self._uniform = random.Random(seed).random()

    def draw(self, depth: int) -> int:
        """Planted depths for the next round, at most `depth`."""
        self._uniform = (self._uniform + _GOLDEN_FRACTION) % 1.0
        planted, survival = 0, 1.0
        while planted < depth:
            survival *= self.acceptance[min(planted, len(self.acceptance) - 1)]
            if self._uniform >= survival:
                break
            planted += 1
        return planted


class OracleDrafter:
    """A `Drafter` for `tree_decoding(..., drafter=...)` that forces each round's acceptance.

    Args:
        drafter: the real head's drafter; its forward runs every round and its context is the oracle's.
        continuation: `(L,)` token ids on the head's device: the prompt (without padding) followed by the
            target's greedy continuation, at least as long as the sequence the generation will reach.
        schedule: how many depths each round plants.

    Attributes:
        planted: depths planted in each round so far (the verify accepts exactly these when the tree holds them).
    """

    def __init__(self, drafter: HeadDrafter, continuation: torch.Tensor, schedule: AcceptanceSchedule):
        if continuation.dim() != 1:
            raise ValueError(f"continuation must be 1-D token ids, got shape {tuple(continuation.shape)}")
        self.drafter = drafter
        self.continuation = continuation
        self.schedule = schedule
        self.planted: list[int] = []

    # The rest of the `Drafter` contract, answered by the real one.
    @property
    def causal(self) -> bool:
        return self.drafter.causal

    def add_context(self, features: torch.Tensor, valid=None, counts=None) -> None:
        self.drafter.add_context(features, valid, counts)

    def select_rows(self, rows: list[int]) -> None:
        self.drafter.select_rows(rows)

    def context(self, tokens: list[int]) -> DraftContext:
        return self.drafter.context(tokens)

    def resume(self, context: DraftContext) -> None:
        self.drafter.resume(context)

    def draft(self, anchors: torch.Tensor, depth: int) -> torch.Tensor:
        """The real head's `(1, depth, V)` logits (in float32) for a batch of one, rewritten so that the round
        accepts the drawn number of depths."""
        if anchors.shape[0] != 1:
            raise ValueError(f"The oracle drafter forces one sequence's acceptance; got a batch of {anchors.shape[0]}.")
        # The head's context covers every committed position before the anchor: the anchor's index is its length.
        anchor_position = self.drafter.context_lengths[0]
        batch_logits = self.drafter.draft(anchors, depth).float()
        logits = batch_logits[0]
        truth = self.continuation[anchor_position + 1 : anchor_position + 1 + depth]
        known = truth.shape[0]  # a host integer: slicing reads no device value
        planted = min(self.schedule.draw(depth), known)
        self.planted.append(planted)
        if planted:
            rows = logits[:planted]
            rows.scatter_(1, truth[:planted, None], rows.amax(dim=-1, keepdim=True) + PLANT_MARGIN)
        if planted < min(depth, known):
            row = logits[planted]
            row.scatter_(0, truth[planted : planted + 1], row.amin(dim=-1, keepdim=True) - PLANT_MARGIN)
        return batch_logits


__all__ = ["AcceptanceSchedule", "OracleDrafter", "PLANT_MARGIN", "acceptance_for_tau", "expected_tau"]
