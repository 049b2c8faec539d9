"""Checks that run before any forward pass, so that bad input fails fast with a message saying how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    LlamaForCausalLM,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2ForCausalLM,
    Qwen3ForCausalLM,
    Qwen3MoeForCausalLM,
)
from transformers.utils import logging

from ..configuration_jetspec import DEFAULT_TREE_SETTINGS, TREE_SETTING_NAMES
from ..modeling_jetspec import JetSpecDraftModel
from .budget import AUTO_BUDGET
from .tree import TREE_EXPANSIONS
from .tree_attention import install_tree_attention, routes_tree_attention

logger = logging.get_logger(__name__)

# Decoders whose forward the tree path drives unchanged: a stack of `model.layers` that each attend through the
# registered attention functions, a prepared 4D mask passed through as it is, RoPE positions from `position_ids`,
# and a DynamicCache/StaticCache of per-layer keys and values. Another decoder with the same anatomy qualifies too,
# but is only accepted once a test holds it to plain decoding.
SUPPORTED_TARGET_CLASSES = (Qwen3ForCausalLM, Qwen3MoeForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM,
                            MistralForCausalLM)
# The largest tree `tree_budget="auto"` measures (its cost table's last size), and the largest one accepted.
MAX_TREE_BUDGET = 256
# The head's block mask is explicit, which these backends take as it is.
HEAD_ATTENTION = ("sdpa", "eager")



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
        for source in sources:
            value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
            if value is not None:
                return value
        return default

    budget = first_set("tree_budget", DEFAULT_TREE_SETTINGS["tree_budget"])
    width = first_set("tree_width", DEFAULT_TREE_SETTINGS["tree_width"])
    depth = first_set("tree_depth", config.max_tree_depth)
    expansion = first_set("tree_expansion", DEFAULT_TREE_SETTINGS["tree_expansion"])
    lookup_tokens = first_set("prompt_lookup_num_tokens", DEFAULT_TREE_SETTINGS["prompt_lookup_num_tokens"])
    draft_window = first_set("draft_window", None)
    if budget != AUTO_BUDGET and (not _is_integer(budget) or budget < 1):
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
    if not _is_integer(width) or width < 1:
        raise ValueError(f"`tree_width` must be an integer >= 1 (children per tree node), got {width!r}.")
    if not _is_integer(depth) or not 1 <= depth <= config.max_tree_depth:
        raise ValueError(
            f"`tree_depth` must be an integer in 1..{config.max_tree_depth} (this head's block_size - 1 = "
            f"{config.block_size} - 1), got {depth!r}."
        )
    if expansion not in TREE_EXPANSIONS:
        raise ValueError(f"`tree_expansion` must be one of {TREE_EXPANSIONS}, got {expansion!r}.")
    if not _is_integer(lookup_tokens) or lookup_tokens < 0:
        raise ValueError(
            f"`prompt_lookup_num_tokens` must be an integer >= 0 (tokens of the prompt-lookup branch added to every "
            f"tree; 0 adds none), got {lookup_tokens!r}."
        )
    if lookup_tokens and expansion != "node":
        raise ValueError(
            "`prompt_lookup_num_tokens` adds a lookup branch to node-level trees only; it cannot be combined with "
            "`tree_expansion='fanout'`."
        )
    if draft_window is not None and (not _is_integer(draft_window) or draft_window < 1):
        raise ValueError(
            f"`draft_window` must be an integer >= 1 (context positions each head layer attends back from a block "
            f"row) or None (the whole context), got {draft_window!r}."
        )
    return TreeSettings(budget=budget, width=width, depth=depth, expansion=expansion, lookup_tokens=lookup_tokens,
                        draft_window=draft_window)


def sliding_window_of(config) -> int | None:
    """The attention window of a target that limits some layers to one, else `None` (full attention).

    Qwen2/Qwen3 configs switch windows on with `use_sliding_window` (or per layer in `layer_types`); Mistral's
    windows are on whenever `sliding_window` is set.
    """
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", None) or "sliding_attention" in layer_types:
        return int(window)
    if getattr(config, "model_type", None) == "mistral":
        return int(window)
    return None


def check_sliding_window(target: PreTrainedModel, total_length: int) -> None:
    """Refuse a call whose sequence can outgrow the target's attention window.

    The tree mask lets every node see the whole committed prefix: that equals sliding-window attention only while
    the whole sequence fits inside the window, where the window hides nothing.
    """
    window = sliding_window_of(target.config)
    if window is not None and total_length > window:
        raise ValueError(
            f"This {type(target).__name__} attends within a sliding window of {window} positions, and this call can "
            f"reach {total_length} (prompt + max_new_tokens). Tree verification attends to the whole prefix, which "
            f"equals the window only up to {window} positions: lower max_new_tokens or the prompt so that the "
            "sequence fits, or generate without `assistant_model`."
        )


def _is_integer(value) -> bool:
    # `True` is an int to Python; as a tree size it is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def check_target_supported(target: PreTrainedModel) -> None:
    """A supported decoder class (`SUPPORTED_TARGET_CLASSES`) with an attention backend that takes a tree mask."""
    if not isinstance(target, SUPPORTED_TARGET_CLASSES):
        names = ", ".join(cls.__name__ for cls in SUPPORTED_TARGET_CLASSES)
        raise TypeError(
            f"JetSpec tree decoding supports {names} targets, got {type(target).__name__}. Other architectures "
            "are not supported."
        )
    config = target.config
    implementation = config._attn_implementation
    # Every registered backend (sdpa, flash-attention, flex, hub kernels) keeps running the target's ordinary
    # forwards; `tree_attention` routes the verify forward alone to a tree-capable attention. Eager takes the
    # tree mask as it is.
    install_tree_attention()
    routable = implementation is not None and not implementation.startswith("paged") and routes_tree_attention(
        implementation
    )
    if implementation != "eager" and not routable:
        raise ValueError(
            f"The target's attention backend {implementation!r} cannot run tree verification (paged attention "
            "needs a paged cache). Load it with `attn_implementation='sdpa'` (or a flash-attention backend), or "
            "switch with `target.set_attn_implementation('sdpa')`."
        )


def check_head_fits_target(head: JetSpecDraftModel, target: PreTrainedModel) -> None:
    """The head must read this target's hidden states and share its vocabulary."""
    if not isinstance(head, JetSpecDraftModel):
        raise TypeError(f"`assistant_model` must be a JetSpecDraftModel, got {type(head).__name__}.")
    head_config, target_config = head.config, target.config
    if head_config.hidden_size != target_config.hidden_size:
        raise ValueError(
            f"The draft head's hidden_size ({head_config.hidden_size}) differs from the target's "
            f"({target_config.hidden_size}): this head was trained for another target. Heads whose hidden size "
            "differs from the target's are not supported."
        )
    if head_config.vocab_size != target_config.vocab_size:
        raise ValueError(
            f"The draft head's vocab_size ({head_config.vocab_size}) differs from the target's "
            f"({target_config.vocab_size}): head and target must share a tokenizer."
        )
    num_layers = target_config.num_hidden_layers
    layer_ids = head_config.dflash_config.get("target_layer_ids")
    if not layer_ids:
        raise ValueError("The draft head's config names no tapped target layers (`dflash_config.target_layer_ids`).")
    bad_layers = [layer_id for layer_id in layer_ids if not 0 <= layer_id < num_layers]
    if bad_layers:
        raise ValueError(
            f"The draft head taps target layers {layer_ids}, but the target has {num_layers} decoder layers "
            f"(valid ids 0..{num_layers - 1}): {bad_layers} do not exist. This head was trained for another target."
        )
    if head_config.num_target_layers is not None and head_config.num_target_layers != num_layers:
        raise ValueError(
            f"The draft head was trained for a target with {head_config.num_target_layers} layers; this target has "
            f"{num_layers}."
        )
    if head.fc.in_features != len(layer_ids) * target_config.hidden_size:
        raise ValueError(
            f"The draft head's `fc` takes {head.fc.in_features} features, but {len(layer_ids)} tapped layers of "
            f"hidden size {target_config.hidden_size} give {len(layer_ids) * target_config.hidden_size}."
        )
    mask_token_id = head_config.mask_token_id
    if mask_token_id is None or not 0 <= mask_token_id < target_config.vocab_size:
        raise ValueError(
            f"The draft head's `dflash_config.mask_token_id` must be a token id of the target's vocabulary, "
            f"got {mask_token_id!r}."
        )
    if head.config._attn_implementation not in HEAD_ATTENTION:
        raise ValueError(
            f"The draft head uses attention backend {head.config._attn_implementation!r}; it needs 'sdpa' or "
            "'eager' (its block mask is explicit). Load it with `attn_implementation='sdpa'`."
        )


def warn_on_head_placement(head: JetSpecDraftModel, target: PreTrainedModel) -> None:
    """Say once per (head, target) pair when the head runs in another dtype or on another device than the target.

    transformers loads a model in its config's dtype when `dtype` is not given, and head configs say bfloat16: next
    to a float32 target on a CPU the head then runs in bfloat16, measured ~20% slower on the bundled pair, and the
    opposite mismatch wastes memory and time on a GPU. A dtype the user asked for (`dtype=` at loading, or a later
    `.to(...)`) is kept without a word.
    """
    warned = head.__dict__.setdefault("_jetspec_placement_warned", set())
    if id(target) in warned:
        return
    head_parameter = next(head.parameters())
    target_weight = target.get_input_embeddings().weight
    messages = []
    config_dtype = head.config.dtype
    if isinstance(config_dtype, str):
        config_dtype = getattr(torch, config_dtype, None)
    dtype_was_chosen = getattr(head, "_requested_dtype", None) is not None or head_parameter.dtype != config_dtype
    if head_parameter.dtype != target_weight.dtype and not dtype_was_chosen:
        messages.append(
            f"the draft head runs in {head_parameter.dtype} (its config's default) but the target in "
            f"{target_weight.dtype}; load it with `JetSpecDraftModel.from_pretrained(..., dtype=target.dtype)`"
        )
    if target_weight.device.type != "meta" and head_parameter.device != target_weight.device:
        messages.append(
            f"the draft head is on {head_parameter.device} but the target's embeddings on {target_weight.device}; "
            "move it with `head.to(target.device)`"
        )
    if messages:
        warned.add(id(target))
        logger.warning("JetSpec: " + "; ".join(messages) + ". Both run every round, so a mismatch costs speed.")


__all__ = [
    "HEAD_ATTENTION",
    "TreeSettings",
    "TREE_SETTING_NAMES",
    "check_head_fits_target",
    "check_sliding_window",
    "check_target_supported",
    "resolve_tree_settings",
    "sliding_window_of",
    "warn_on_head_placement",
]
