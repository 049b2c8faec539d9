"""Routing `target.generate(..., assistant_model=<JetSpecDraftModel>)` to the tree loop.

transformers' assisted decoding verifies a straight chain only and picks its candidate generator from a fixed
list, so a tree needs its own loop. `enable(target)` installs a per-instance `generate` (as transformers itself
does for repos that ship `custom_generate/`): a call whose `assistant_model` is a JetSpec head goes through
`GenerationMixin.generate(custom_generate=tree_decoding)`, so that inputs, cache, logits processors, stopping
criteria and length limits are prepared exactly as for plain decoding; every other call is the stock one.
"""

from __future__ import annotations

import functools

from transformers import GenerationMixin, PreTrainedModel, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria

from ..modeling_jetspec import JetSpecDraftModel
from .tree_decoding import tree_decoding
from .validation import check_head_fits_target, check_target_supported, resolve_tree_settings

_ENABLED_FLAG = "_jetspec_tree_decoding_enabled"


def enable(target: PreTrainedModel) -> PreTrainedModel:
    """Let `target.generate(..., assistant_model=head)` run JetSpec tree decoding when `head` is a JetSpec head.

    Call once per target instance; calling again is harmless. Other `generate` calls are left untouched.

    Args:
        target: a `Qwen3ForCausalLM` or `Qwen3MoeForCausalLM` with `sdpa` or `eager` attention.

    Returns:
        The same `target`, for chaining.
    """
    check_target_supported(target)
    if getattr(target, _ENABLED_FLAG, False):
        return target
    stock_generate = target.generate

    @functools.wraps(stock_generate)
    def generate(*args, assistant_model=None, **kwargs):
        if isinstance(assistant_model, JetSpecDraftModel):
            return generate_with_draft_head(target, *args, draft_head=assistant_model, **kwargs)
        return stock_generate(*args, assistant_model=assistant_model, **kwargs)

    target.generate = generate
    setattr(target, _ENABLED_FLAG, True)
    return target


def is_enabled(target: PreTrainedModel) -> bool:
    """Whether `enable(target)` was called on this instance."""
    return bool(getattr(target, _ENABLED_FLAG, False))


def generate_with_draft_head(
    target: PreTrainedModel,
    inputs=None,
    *,
    draft_head: JetSpecDraftModel,
    tree_budget: int | None = None,
    tree_width: int | None = None,
    tree_depth: int | None = None,
    round_profiler=None,
    streamer=None,
    stopping_criteria: StoppingCriteriaList | None = None,
    stop_strings: str | list[str] | None = None,
    tokenizer=None,
    **kwargs,
):
    """`target.generate(inputs, **kwargs)` with JetSpec tree decoding; see `enable` for the usual entry point.

    Args:
        tree_budget: nodes per round's tree, root included (default: the head config's `tree_budget`).
        tree_width: children attached per expanded node (default: the head config's `tree_width`).
        tree_depth: maximum tree depth, 1..block_size-1 (default: the head config's `tree_depth`, else B-1).
        round_profiler: a `RoundProfiler` that accumulates per-stage wall time.
        Everything else means what it means for `GenerationMixin.generate`.
    """
    if kwargs.get("custom_generate") is not None:
        raise ValueError("`custom_generate` cannot be combined with a JetSpec `assistant_model`.")
    check_target_supported(target)
    check_head_fits_target(draft_head, target)
    tree_settings = resolve_tree_settings(draft_head, tree_budget, tree_width, tree_depth)

    # A custom decoding callable does not receive the tokenizer, so the stop-string criterion is built here.
    if stop_strings is None:
        stop_strings = (kwargs.get("generation_config") or target.generation_config).stop_strings
    stopping_criteria = StoppingCriteriaList(stopping_criteria or [])
    if stop_strings:
        if tokenizer is None:
            raise ValueError("`stop_strings` needs the tokenizer: pass `tokenizer=` to `generate`.")
        stopping_criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))

    decode = functools.partial(
        tree_decoding,
        draft_head=draft_head,
        tree_settings=tree_settings,
        streamer=streamer,
        round_profiler=round_profiler,
    )
    return GenerationMixin.generate(
        target,
        inputs,
        stopping_criteria=stopping_criteria,
        streamer=streamer,
        custom_generate=decode,
        stop_strings=None,
        **kwargs,
    )


__all__ = ["enable", "generate_with_draft_head", "is_enabled"]
