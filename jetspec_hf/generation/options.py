"""`generate` arguments the tree path cannot honour, refused before anything runs or streams.

Nothing is silently ignored: an option that plain decoding honours is either honoured by the tree path exactly as
plain decoding does, or refused here with an error that names it and says what to do instead.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, StaticCache

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


class GenerateOptions:
    """The value a `generate` call gives each generation option: call kwargs first, then the passed
    `generation_config`, then the target's own generation config (`None` where none of them sets it)."""

    def __init__(self, call_kwargs: dict, consumed_kwargs: dict, generation_config, target_generation_config):
        self._sources = [call_kwargs, consumed_kwargs, generation_config, target_generation_config]

    def value(self, name: str):
        for source in self._sources:
            if source is None:
                continue
            value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
            if value is not None:
                return value
        return None


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


__all__ = ["GenerateOptions", "check_generation_options", "check_static_cache_room"]
