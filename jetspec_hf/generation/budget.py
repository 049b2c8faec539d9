"""How many tree nodes each round verifies.

Each round the loop tells the policy how many rows the round has (`start_round`), then asks each row's policy three
things: whether to draft at all (a root-only round is one step of
plain decoding and needs no draft), how large a tree to grow (`max_budget`), and how many of the grown tree's nodes
to verify (`choose`): node-level trees are nested, so the first N nodes of the grown tree are the best N-node tree
and any N can be picked after growing. After the verify it reports what was accepted (`observe`).
"""

from __future__ import annotations

from typing import Protocol

from .tree import DraftTree

# `tree_budget="auto"`: the size of each round's tree chosen by `auto_budget.AutoBudget`.
AUTO_BUDGET = "auto"


class BudgetPolicy(Protocol):
    """What the loop needs from a budget policy."""

    max_budget: int

    def start_round(self, rows: int) -> None:
        """A round of `rows` sequences begins (before any row is asked)."""

    def for_row(self) -> BudgetPolicy:
        """The policy one row of the batch asks (itself, where rows do not decide together)."""

    def wants_draft(self, prefix_length: int) -> bool:
        """Whether this round drafts (False: verify the root alone)."""

    def choose(self, tree: DraftTree, prefix_length: int) -> int:
        """How many of `tree`'s nodes (a prefix in creation order, root included) to verify."""

    def observe(self, tree: DraftTree, accepted: int) -> None:
        """After the verify of `tree`: `accepted` of its draft nodes were accepted."""


class FixedBudget:
    """The same budget every round: `tree_budget=<int>`."""

    def __init__(self, budget: int):
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(
                f"A fixed budget is an integer >= 1, got {budget!r}; `tree_budget='auto'` runs with the "
                "`AutoBudget` policy that `generate` builds (pass `budget_policy=` when calling `tree_decoding`)."
            )
        self.max_budget = budget

    def start_round(self, rows: int) -> None:
        pass

    def for_row(self) -> FixedBudget:
        return self

    def wants_draft(self, prefix_length: int) -> bool:
        return self.max_budget > 1

    def choose(self, tree: DraftTree, prefix_length: int) -> int:
        return len(tree)

    def observe(self, tree: DraftTree, accepted: int) -> None:
        pass


__all__ = ["AUTO_BUDGET", "BudgetPolicy", "FixedBudget"]
