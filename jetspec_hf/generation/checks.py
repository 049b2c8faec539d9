"""Every refusal of the tree path, run before any forward pass so that bad input fails fast with a message saying
how to fix it: the target, the head against the target, the sliding window, the cache, and the `generate` options
the tree path cannot honour.

Nothing is silently ignored: an option that plain decoding honours is either honoured by the tree path exactly as
plain decoding does, or refused here with an error that names it and says what to do instead.
"""

from __future__ import annotations

import torch
from transformers import (
    LlamaForCausalLM,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2ForCausalLM,
    Qwen3ForCausalLM,
    Qwen3MoeForCausalLM,
)
from transformers.cache_utils import DynamicCache, StaticCache
from transformers.utils import logging

from ..compatibility import head_fit_problems
from ..modeling_jetspec import JetSpecDraftModel
from .settings import GenerateOptions
from .tree_attention import routes_tree_attention

logger = logging.get_logger(__name__)

# Decoders whose forward the tree path drives unchanged: a stack of `model.layers` that each attend through the
# registered attention functions, a prepared 4D mask passed through as it is, RoPE positions from `position_ids`,
# and a DynamicCache/StaticCache of per-layer keys and values. Another decoder with the same anatomy qualifies too,
# but is only accepted once a test holds it to plain decoding.
SUPPORTED_TARGET_CLASSES = (Qwen3ForCausalLM, Qwen3MoeForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM,
                            MistralForCausalLM)
# The head's block mask is explicit, which these backends take as it is.
HEAD_ATTENTION = ("sdpa", "eager")



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
    # forwards; `tree_attention` routes the verify forward alone to a tree-capable attention (installed by
    # `enable`). Eager takes the tree mask as it is.
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
    problems = head_fit_problems(head_config, target_config)
    if problems:
        raise ValueError(
            "The draft head does not fit this target: " + "; ".join(problems) + ". This head was trained for "
            "another target: a head borrows its target's embeddings and lm_head and reads the layers it was "
            "trained on, so use the head released for this target (or train one for it)."
        )
    layer_ids = head_config.dflash_config.get("target_layer_ids")
    if not layer_ids:
        raise ValueError("The draft head's config names no tapped target layers (`dflash_config.target_layer_ids`).")
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

# Assisted-generation knobs that steer a chain drafter (a draft LM or prompt lookup); they mean nothing to a tree.
_ASSISTED_ONLY = (
    "num_assistant_tokens",
    "num_assistant_tokens_schedule",
    "assistant_confidence_threshold",
    "assistant_lookbehind",
    "target_lookbehind",
    "assistant_early_exit",
    "max_matching_ngram_size",
    "assistant_tokenizer",
)


def prompt_batch_size(inputs, call_kwargs: dict) -> int:
    """How many sequences the call generates: the rows of the `input_ids` passed (1 when none are)."""
    input_ids = inputs if inputs is not None else call_kwargs.get("input_ids")
    return input_ids.shape[0] if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 else 1


def check_generation_options(options: GenerateOptions, inputs, call_kwargs: dict, streamer=None) -> None:
    """Refuse, with a message naming the option, every argument the tree path does not support."""
    input_ids = inputs if inputs is not None else call_kwargs.get("input_ids")
    if call_kwargs.get("inputs_embeds") is not None:
        raise ValueError(
            "JetSpec tree decoding needs token ids: the draft head and the prompt lookup read `input_ids`, and "
            "`inputs_embeds` cannot be verified as a tree. Pass `input_ids` instead of `inputs_embeds`."
        )
    if isinstance(input_ids, torch.Tensor) and (input_ids.dim() != 2 or input_ids.shape[1] == 0):
        raise ValueError("JetSpec tree decoding needs at least one prompt token (`input_ids` of shape (B, L)).")
    batch_size = prompt_batch_size(inputs, call_kwargs)
    if batch_size > 1:
        _check_batch_options(options, call_kwargs, batch_size, streamer)
    if call_kwargs.get("position_ids") is not None:
        raise ValueError(
            "`position_ids` cannot be passed with a JetSpec head: tree verification places every node by its depth "
            "after the committed tokens. Leave `position_ids` out."
        )

    num_beams = options.value("num_beams") or 1
    if num_beams != 1:
        raise ValueError(f"Beam search (num_beams={num_beams}) is not supported with a JetSpec draft head; use 1.")
    returns = options.value("num_return_sequences") or 1
    if returns != 1:
        raise ValueError(
            f"num_return_sequences={returns} is not supported with a JetSpec draft head; call generate once per "
            "sequence."
        )
    if options.value("use_cache") is False:
        raise ValueError("JetSpec tree decoding needs the KV cache; do not pass `use_cache=False`.")
    _check_cache(options, call_kwargs.get("cache", call_kwargs.get("past_key_values")), batch_size)

    refused = {
        "output_attentions": "attention weights of a tree forward are not those of plain decoding steps",
        "output_hidden_states": "hidden states of a tree forward are not those of plain decoding steps",
        "dola_layers": "DoLa decoding contrasts layers step by step",
        "penalty_alpha": "contrastive search re-ranks candidates step by step",
        "guidance_scale": "classifier-free guidance runs its own unconditional model step by step",
        "negative_prompt_ids": "classifier-free guidance runs its own unconditional model step by step",
        "token_healing": "token healing rewrites the prompt with the tokenizer, which the tree path does not get",
        "synced_gpus": "the tree path runs on one process",
    }
    for name, why in refused.items():
        value = options.value(name)
        if name == "guidance_scale" and value == 1:
            continue
        if value not in (None, False):
            raise ValueError(
                f"`{name}` is not supported with a JetSpec draft head ({why}). Leave it out, or call generate "
                "without `assistant_model`."
            )
    watermarking = options.value("watermarking_config")
    if watermarking is not None and "synthid" in type(watermarking).__name__.lower():
        raise ValueError(
            "SynthID watermarking keeps a state across decoding steps, which a tree walk would corrupt; it is not "
            "supported with a JetSpec draft head."
        )
    if options.value("speculation_type") is not None:
        raise ValueError(
            f"`speculation_type={options.value('speculation_type')!r}` selects transformers' own assisted decoding "
            "path, which a JetSpec head replaces with tree decoding: leave it out to run the tree, or call generate "
            "on a target that was not enabled to run transformers' path."
        )
    for name in _ASSISTED_ONLY:
        if options.value(name) is not None:
            raise ValueError(
                f"`{name}` configures assisted generation with a draft model or prompt lookup; a JetSpec head drafts "
                "a tree instead. Use `tree_budget`, `tree_width`, `tree_depth` and `prompt_lookup_num_tokens`."
            )


def _check_cache(options: GenerateOptions, cache, batch_size: int) -> None:
    implementation = options.value("cache_implementation")
    if implementation not in (None, "dynamic", "static"):
        raise ValueError(
            f"JetSpec tree decoding supports dynamic and static caches, got cache_implementation={implementation!r}."
        )
    static = implementation == "static" or isinstance(cache, StaticCache)
    if static and batch_size > 1:
        raise ValueError(
            f"A static cache is supported for one sequence at a time, got a batch of {batch_size}: rows accept "
            "different numbers of tokens and leave the batch, which a static cache's fixed rows cannot follow. Use "
            "the default dynamic cache for batches."
        )
    if cache is not None and not isinstance(cache, (DynamicCache, StaticCache)):
        raise ValueError(
            f"JetSpec tree decoding supports DynamicCache and StaticCache, got {type(cache).__name__}."
        )


def check_static_cache_room(cache, longest: int) -> None:
    """A passed StaticCache must hold the whole sequence but its last token: what plain decoding's cache holds at
    the end, and where the last round's tree roots."""
    if not isinstance(cache, StaticCache):
        return
    capacity, needed = cache.layers[0].max_cache_len, longest - 1
    if capacity < needed:
        raise ValueError(
            f"The StaticCache holds {capacity} positions, but this call can need {needed} (prompt + max_new_tokens, "
            f"but the last token): {needed - capacity} too few. Build it with `max_cache_len >= {needed}`, or lower "
            "max_new_tokens."
        )


def _check_batch_options(options: GenerateOptions, call_kwargs: dict, batch_size: int, streamer) -> None:
    """What a batch of several sequences cannot do on the tree path (rows advance by different amounts)."""
    if streamer is not None:
        raise ValueError(
            f"A streamer takes one sequence; got a batch of {batch_size} (transformers' streamers refuse batches "
            "too). Stream one prompt per call."
        )
    for name in ("output_scores", "output_logits"):
        if options.value(name):
            raise ValueError(
                f"`{name}` is not supported for a batch of {batch_size} with a JetSpec head: rows advance by "
                "different amounts each round, so there are no per-step (B, V) tensors as plain decoding returns. "
                "Generate one prompt per call to get them."
            )
    cache = call_kwargs.get("cache", call_kwargs.get("past_key_values"))
    if cache is not None and cache.get_seq_length() > 0:
        raise ValueError(
            f"A non-empty `cache` is not supported for a batch of {batch_size} with a JetSpec head; continue "
            "conversations one per call."
        )
    if call_kwargs.get("prefix_allowed_tokens_fn") is not None:
        raise ValueError(
            "`prefix_allowed_tokens_fn` takes a batch index, which the tree path cannot give when it walks each "
            f"row of a batch of {batch_size} on its own; generate one prompt per call."
        )


__all__ = [
    "HEAD_ATTENTION",
    "SUPPORTED_TARGET_CLASSES",
    "check_generation_options",
    "check_head_fits_target",
    "check_sliding_window",
    "check_static_cache_room",
    "check_target_supported",
    "prompt_batch_size",
    "sliding_window_of",
    "warn_on_head_placement",
]
