"""Generation settings as a call resolves them: each option from the first source that sets it (call kwargs, the
passed generation config, the target's), and the tree settings, checked for range.

The names of the tree settings are `configuration_jetspec.TREE_SETTING_NAMES`, the one list every module reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..configuration_jetspec import DEFAULT_TREE_SETTINGS, TREE_SETTING_NAMES
from ..modeling_jetspec import JetSpecDraftModel
from .budget import AUTO_BUDGET
from .tree import TREE_EXPANSIONS

# The largest tree `tree_budget="auto"` measures (its cost table's last size), and the largest one accepted.
MAX_TREE_BUDGET = 256


def first_setting(sources, name: str):
    """The value of `name` in the first of `sources` that sets it (not `None`); dicts are read by key, other
    objects (generation configs) by attribute, `None` sources skipped."""
    for source in sources:
        if source is None:
            continue
        value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
        if value is not None:
            return value
    return None


class GenerateOptions:
    """The value a `generate` call gives each generation option: call kwargs first, then the passed
    `generation_config`, then the target's own generation config (`None` where none of them sets it)."""

    def __init__(self, call_kwargs: dict, consumed_kwargs: dict, generation_config, target_generation_config):
        self._sources = [call_kwargs, consumed_kwargs, generation_config, target_generation_config]

    def value(self, name: str):
        return first_setting(self._sources, name)


@dataclass(frozen=True)
class TreeSettings:
    """Shape of each round's tree.

    Attributes:
        budget: nodes verified per round, root included (1 = plain decoding), or `"auto"`: chosen every round from
            this machine's measured costs and the head's calibrated confidence (`budget/auto.py`).
        width: at most this many head-ranked children per node.
        depth: deepest tree level.
        expansion: `"node"` (best nodes one at a time) or `"fanout"` (the published reference's rule).
        lookup_tokens: length of the prompt-lookup branch added to every tree (0 = none).
        draft_window: the head attends at most this many positions back from each block row (`None`: the head's
            declared windows alone, full context otherwise). Drafts change, the output does not.
    """

    budget: int | str
    width: int
    depth: int
    expansion: str = "node"
    lookup_tokens: int = 0
    draft_window: int | None = None


def resolve_tree_settings(head: JetSpecDraftModel, *sources) -> TreeSettings:
    """Each tree setting from the first of `sources` that sets it, then from the head's generation config (its
    folder's `generation_config.json`), then `DEFAULT_TREE_SETTINGS`; ranges checked.

    `sources` are dicts (call kwargs) or objects with attributes (generation configs), highest priority first.
    """
    config = head.config
    sources = (*sources, getattr(head, "generation_config", None))

    def first_set(name: str, default):
        value = first_setting(sources, name)
        return default if value is None else value

    budget = first_set("tree_budget", DEFAULT_TREE_SETTINGS["tree_budget"])
    width = first_set("tree_width", DEFAULT_TREE_SETTINGS["tree_width"])
    depth = first_set("tree_depth", config.max_tree_depth)
    expansion = first_set("tree_expansion", DEFAULT_TREE_SETTINGS["tree_expansion"])
    lookup_tokens = first_set("prompt_lookup_num_tokens", DEFAULT_TREE_SETTINGS["prompt_lookup_num_tokens"])
    draft_window = first_set("draft_window", None)
    if budget != AUTO_BUDGET and (not is_integer(budget) or budget < 1):
        raise ValueError(
            f"`tree_budget` must be an integer >= 1 (nodes per round, root included) or {AUTO_BUDGET!r} (chosen per "
            f"round from measured costs), got {budget!r}."
        )
    if budget != AUTO_BUDGET and budget > MAX_TREE_BUDGET:
        raise ValueError(
            f"`tree_budget={budget}` is beyond {MAX_TREE_BUDGET}, the largest tree `tree_budget='auto'` ever "
            f"measures: a round that verifies more nodes costs more than the few extra tokens it can accept "
            f"(at most {config.max_tree_depth} per round for this head). Use a budget up to {MAX_TREE_BUDGET}, or "
            "'auto'."
        )
    if not is_integer(width) or width < 1:
        raise ValueError(f"`tree_width` must be an integer >= 1 (children per tree node), got {width!r}.")
    if not is_integer(depth) or not 1 <= depth <= config.max_tree_depth:
        raise ValueError(
            f"`tree_depth` must be an integer in 1..{config.max_tree_depth} (this head's block_size - 1 = "
            f"{config.block_size} - 1), got {depth!r}."
        )
    if expansion not in TREE_EXPANSIONS:
        raise ValueError(f"`tree_expansion` must be one of {TREE_EXPANSIONS}, got {expansion!r}.")
    if not is_integer(lookup_tokens) or lookup_tokens < 0:
        raise ValueError(
            f"`prompt_lookup_num_tokens` must be an integer >= 0 (tokens of the prompt-lookup branch added to every "
            f"tree; 0 adds none), got {lookup_tokens!r}."
        )
    if lookup_tokens and expansion != "node":
        raise ValueError(
            "`prompt_lookup_num_tokens` adds a lookup branch to node-level trees only; it cannot be combined with "
            "`tree_expansion='fanout'`."
        )
    if draft_window is not None and (not is_integer(draft_window) or draft_window < 1):
        raise ValueError(
            f"`draft_window` must be an integer >= 1 (context positions each head layer attends back from a block "
            f"row) or None (the whole context), got {draft_window!r}."
        )
    return TreeSettings(budget=budget, width=width, depth=depth, expansion=expansion, lookup_tokens=lookup_tokens,
                        draft_window=draft_window)


def is_integer(value) -> bool:
    # `True` is an int to Python; as a tree size it is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["GenerateOptions", "MAX_TREE_BUDGET", "TREE_SETTING_NAMES", "TreeSettings", "first_setting", "is_integer",
           "resolve_tree_settings"]
