"""How many nodes each round verifies: the policy interface and a fixed budget (`policy.py`), and
`tree_budget="auto"` (`auto.py`) with what it stands on: the head's calibrated confidence (`calibration.py`), the
round costs (`costs.py`) and the verify forward timed once per process (`measurement.py`)."""

from .policy import AUTO_BUDGET, BudgetPolicy, FixedBudget

__all__ = ["AUTO_BUDGET", "BudgetPolicy", "FixedBudget"]
