"""Checks that run before any forward pass, so that bad input fails fast with a message saying how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, Qwen3ForCausalLM, Qwen3MoeForCausalLM

from ..modeling_jetspec import JetSpecDraftModel

SUPPORTED_TARGET_CLASSES = (Qwen3ForCausalLM, Qwen3MoeForCausalLM)
# Verification needs an arbitrary 4D tree mask: flash-attention kernels only take padding masks, and flex
# attention would need a BlockMask.
SUPPORTED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class TreeSettings:
    """Shape of each round's tree: node budget (root included), children per expansion, maximum depth."""

    budget: int
    width: int
    depth: int


def resolve_tree_settings(
    head: JetSpecDraftModel,
    tree_budget: int | None = None,
    tree_width: int | None = None,
    tree_depth: int | None = None,
) -> TreeSettings:
    """Fill unset values from the head's config and check their ranges."""
    config = head.config
    budget = config.tree_budget if tree_budget is None else tree_budget
    width = config.tree_width if tree_width is None else tree_width
    depth = tree_depth if tree_depth is not None else (config.tree_depth or config.max_tree_depth)
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"`tree_budget` must be an integer >= 1 (nodes per round, root included), got {budget!r}.")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"`tree_width` must be an integer >= 1 (children per expanded node), got {width!r}.")
    if not isinstance(depth, int) or not 1 <= depth <= config.max_tree_depth:
        raise ValueError(
            f"`tree_depth` must be an integer in 1..{config.max_tree_depth} (this head's block_size - 1 = "
            f"{config.block_size} - 1), got {depth!r}."
        )
    return TreeSettings(budget=budget, width=width, depth=depth)


def check_target_supported(target: PreTrainedModel) -> None:
    """A Qwen3 dense or MoE causal LM, full attention only, with an attention backend that takes a tree mask."""
    if not isinstance(target, SUPPORTED_TARGET_CLASSES):
        raise TypeError(
            f"JetSpec tree decoding supports Qwen3ForCausalLM and Qwen3MoeForCausalLM targets, got "
            f"{type(target).__name__}. Other architectures are not supported."
        )
    config = target.config
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in layer_types:
        raise ValueError(
            "This Qwen3 target uses sliding-window attention (`use_sliding_window=True`), which tree verification "
            "does not support: load it with `use_sliding_window=False`."
        )
    implementation = config._attn_implementation
    if implementation not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"Tree verification needs an attention backend that takes an arbitrary 4D mask; the target uses "
            f"{implementation!r}. Switch it with `target.set_attn_implementation('sdpa')`, or load it with "
            f"`attn_implementation='sdpa'` (or 'eager')."
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
    if head.config._attn_implementation not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"The draft head uses attention backend {head.config._attn_implementation!r}; it needs 'sdpa' or "
            "'eager' (its block mask is explicit). Load it with `attn_implementation='sdpa'`."
        )


def check_generation_call(
    target: PreTrainedModel, input_ids: torch.Tensor, generation_config: GenerationConfig, model_kwargs: dict
) -> None:
    """Arguments of a `generate` call that tree decoding cannot honour."""
    if input_ids.shape[1] == 0:
        raise ValueError("JetSpec tree decoding needs at least one prompt token (`input_ids`), got none.")
    if generation_config.num_beams != 1:
        raise ValueError(
            f"Beam search (num_beams={generation_config.num_beams}) is not supported with a JetSpec draft head; "
            "use num_beams=1."
        )
    if generation_config.num_return_sequences != 1:
        raise ValueError(
            f"num_return_sequences={generation_config.num_return_sequences} is not supported with a JetSpec draft "
            "head; call generate once per sequence."
        )
    if input_ids.shape[0] != 1:
        raise ValueError(
            f"JetSpec tree decoding runs one sequence at a time; got a batch of {input_ids.shape[0]}. "
            "Call generate once per prompt."
        )
    if generation_config.use_cache is False:
        raise ValueError("JetSpec tree decoding needs the KV cache; do not pass `use_cache=False`.")
    cache = model_kwargs.get("cache")
    if cache is not None and type(cache).__name__ != "DynamicCache":
        raise ValueError(
            f"JetSpec tree decoding supports the default DynamicCache only, got {type(cache).__name__} "
            f"(cache_implementation={generation_config.cache_implementation!r})."
        )


def count_left_padding(attention_mask: torch.Tensor | None) -> int:
    """Number of leading padding positions of a single sequence.

    Padding anywhere but on the left has no meaning for a prompt and is refused.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return 0
    real = attention_mask[0].bool()
    if not bool(real.any()):
        raise ValueError("`attention_mask` masks every prompt token: there is nothing to continue.")
    first_real = int(real.int().argmax())
    if not bool(real[first_real:].all()):
        raise ValueError("`attention_mask` has zeros after the first real token: only left padding is supported.")
    return first_real


__all__ = [
    "SUPPORTED_ATTENTION",
    "TreeSettings",
    "check_generation_call",
    "check_head_fits_target",
    "check_target_supported",
    "count_left_padding",
    "resolve_tree_settings",
]
