"""How many tree nodes each round verifies.

The loop asks a budget policy three things per round, for all rows of the batch at once (they share the round's
verify forward): whether to draft at all (a round without a draft verifies each row's root alone, one step of plain
decoding, and needs no head forward), how large a tree to grow (`max_budget`), and how many of each grown tree's
nodes to verify (`choose`): node-level trees are nested, so the first N nodes of a grown tree are the best N-node
tree and any N can be picked after growing. After the verify it reports what each row accepted (`observe`).
"""

from __future__ import annotations

from typing import Protocol

from ..tree import DraftTree

# `tree_budget="auto"`: the size of each round's tree chosen by `budget.auto.AutoBudget`.
AUTO_BUDGET = "auto"


class BudgetPolicy(Protocol):
    """What the loop needs from a budget policy."""

    max_budget: int
    # Whether `observe` returns expectations (then the output reports them per round).
    predicts_acceptance: bool

    def wants_draft(self, positions: list[int]) -> bool:
        """Whether this round drafts (False: every row verifies its root alone); `positions` are the rows' anchor
        positions."""

    def choose(self, trees: list[DraftTree], positions: list[int]) -> list[int]:
        """How many of each row's grown tree's nodes (a prefix in creation order, root included) to verify; a row
        that does not draft this round passes its root alone."""

    def observe(self, trees: list[DraftTree], accepted: list[int]) -> list[float] | None:
        """After the verify: each row's verified tree and accepted draft tokens. Returns each row's expected
        accepted draft tokens where the policy predicts them (`None` otherwise), for the output's statistics."""


class FixedBudget:
    """The same budget every round: `tree_budget=<int>`."""

    predicts_acceptance = False

    def __init__(self, budget: int):
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(
                f"A fixed budget is an integer >= 1, got {budget!r}; `tree_budget='auto'` runs with the "
                "`AutoBudget` policy that `generate` builds (pass `budget_policy=` when calling `tree_decoding`)."
            )
        self.max_budget = budget

    def wants_draft(self, positions: list[int]) -> bool:
        return self.max_budget > 1

    def choose(self, trees: list[DraftTree], positions: list[int]) -> list[int]:
        return [len(tree) for tree in trees]

    def observe(self, trees: list[DraftTree], accepted: list[int]) -> None:
        return None


__all__ = ["AUTO_BUDGET", "BudgetPolicy", "FixedBudget"]
