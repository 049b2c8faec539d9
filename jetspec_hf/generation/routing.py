"""Routing `target.generate(..., assistant_model=<JetSpecDraftModel>)` to the tree loop.

transformers' assisted decoding verifies a straight chain only and picks its candidate generator from a fixed
list, so a tree needs its own loop. `enable(target)` installs a per-instance `generate` (as transformers itself
does for repos that ship `custom_generate/`): a call whose `assistant_model` is a JetSpec head is checked in full,
then runs `GenerationMixin.generate(custom_generate=tree_decoding)`, so that inputs, cache, logits processors,
stopping criteria and length limits are prepared exactly as for plain decoding; every other call is the stock one.

The per-instance `generate` is a small object holding a weak reference to its model (no reference cycle, so `del
target` frees it at once) that deep-copies onto the copy and pickles with the model.
"""

from __future__ import annotations

import copy
import functools
import inspect
import weakref

from transformers import DynamicCache, GenerationConfig, GenerationMixin, PreTrainedModel, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria

from ..modeling_jetspec import JetSpecDraftModel
from .budget import AUTO_BUDGET
from .budget.auto import auto_budget_policy
from .capture import has_capture_hooks, install_capture_hooks
from .checks import (
    check_generation_options,
    check_head_fits_target,
    check_sliding_window,
    check_static_cache_room,
    check_target_supported,
    prompt_batch_size,
    sliding_window_of,
    warn_on_head_placement,
)
from .loop import tree_decoding
from .settings import TREE_SETTING_NAMES, GenerateOptions, resolve_tree_settings
from .tree_attention import install_tree_attention

# Generation settings this package consumes itself instead of handing them to `GenerationMixin.generate`.
_CONSUMED_SETTINGS = (*TREE_SETTING_NAMES, "stop_strings")


class TreeRoutingGenerate:
    """The `generate` that `enable` installs on one target instance.

    A call with a JetSpec `assistant_model` runs tree decoding; any other call is the model's own `generate`.
    """

    def __init__(self, model: PreTrainedModel):
        self._model = weakref.ref(model)

    @property
    def model(self) -> PreTrainedModel:
        model = self._model()
        if model is None:
            raise ReferenceError("The model this `generate` belongs to no longer exists.")
        return model

    @property
    def __signature__(self) -> inspect.Signature:
        # Introspection (pipelines, IDEs) sees the stock signature.
        return inspect.signature(type(self.model).generate.__get__(self.model))

    @property
    def __doc__(self) -> str | None:  # noqa: D105 - mirrors the stock docstring
        return type(self.model).generate.__doc__

    def __call__(self, *args, assistant_model=None, **kwargs):
        model = self.model
        if isinstance(assistant_model, JetSpecDraftModel):
            return generate_with_draft_head(model, *args, draft_head=assistant_model, **kwargs)
        return type(model).generate(model, *args, assistant_model=assistant_model, **kwargs)

    def __deepcopy__(self, memo):
        # Deep-copying the model copies this object as part of the model's __dict__: bind to the copy, which
        # `deepcopy` has already registered in `memo`.
        return TreeRoutingGenerate(memo.get(id(self.model), self.model))

    def __reduce__(self):
        return (TreeRoutingGenerate, (self.model,))


def enable(target: PreTrainedModel) -> PreTrainedModel:
    """Let `target.generate(..., assistant_model=head)` run JetSpec tree decoding when `head` is a JetSpec head.

    Call once per target instance; calling again is harmless. Other `generate` calls are left untouched. The
    target keeps deep-copying, pickling and being freed like any model: a copy is enabled and bound to itself.

    Args:
        target: a Qwen3 (dense or MoE), Llama, Qwen2 or Mistral causal LM (any attention backend but paged
            attention).

    Returns:
        The same `target`, for chaining.
    """
    install_tree_attention()
    check_target_supported(target)
    if not is_enabled(target):
        target.generate = TreeRoutingGenerate(target)
    install_capture_hooks(target.model.layers)
    return target


def is_enabled(target: PreTrainedModel) -> bool:
    """Whether `enable(target)` was called on this instance (or on the model it was copied from)."""
    router = target.__dict__.get("generate")
    return isinstance(router, TreeRoutingGenerate) and router._model() is target and has_capture_hooks(
        target.model.layers
    )


def generate_with_draft_head(
    target: PreTrainedModel,
    inputs=None,
    *,
    draft_head: JetSpecDraftModel,
    generation_config: GenerationConfig | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    streamer=None,
    tokenizer=None,
    round_profiler=None,
    **kwargs,
):
    """`target.generate(inputs, **kwargs)` with JetSpec tree decoding; see `enable` for the usual entry point.

    Every argument is checked before anything runs or streams. Tree settings resolve like any generation
    argument: call kwargs, then the passed `generation_config`, then `target.generation_config`, then the head's
    defaults.

    Args:
        tree_budget: nodes verified per round, root included, or `"auto"` (chosen every round from this machine's
            measured costs and the head's calibrated confidence).
        tree_width: at most this many head-ranked children per tree node.
        tree_depth: maximum tree depth, 1..block_size-1.
        tree_expansion: `"node"` (best nodes one at a time, the default) or `"fanout"` (the published reference's
            rule: the best frontier node's top-`tree_width` children at once).
        prompt_lookup_num_tokens: adds a prompt-lookup branch of this many tokens to every tree.
        draft_window: the head attends at most this many context positions back from each block row, so its
            cost stops growing with the context (drafts change, the output does not); default: the head's own
            declared sliding windows, else the whole context.
        round_profiler: a `RoundProfiler` that accumulates per-stage wall time.
        Everything else means what it means for `GenerationMixin.generate`.
    """
    if kwargs.get("custom_generate") is not None:
        raise ValueError("`custom_generate` cannot be combined with a JetSpec `assistant_model`.")
    # A backend chosen or registered since `enable` (`set_attn_implementation`) gets its tree routing too.
    install_tree_attention()
    check_target_supported(target)
    check_head_fits_target(draft_head, target)
    setting_kwargs = {name: kwargs.pop(name) for name in _CONSUMED_SETTINGS if name in kwargs}
    options = GenerateOptions(kwargs, setting_kwargs, generation_config, target.generation_config)
    check_generation_options(options, inputs, kwargs, streamer)
    check_sliding_window(target, _longest_sequence(options, inputs, kwargs))
    check_static_cache_room(kwargs.get("cache"), _longest_sequence(options, inputs, kwargs))
    if sliding_window_of(target.config) is not None and kwargs.get("cache") is None \
            and options.value("cache_implementation") in (None, "dynamic"):
        # A sliding cache layer evicts keys once it holds a window's worth, and a round's tree rows count towards
        # it before the rejected ones are dropped. The sequence fits the window (checked above), so a cache that
        # keeps everything attends exactly as the window would.
        kwargs["cache"] = DynamicCache()
    tree_settings = resolve_tree_settings(draft_head, setting_kwargs, generation_config, target.generation_config)
    warn_on_head_placement(draft_head, target)
    stopping_criteria = _with_stop_strings(stopping_criteria, options.value("stop_strings"), tokenizer)

    generation_config, kwargs = _without_consumed_settings(target, generation_config, kwargs)

    budget_policy = None
    if tree_settings.budget == AUTO_BUDGET:
        # Measures this machine's verify costs on the first such call of the process (docs/design.md §5).
        device = _input_device(target, inputs, kwargs)
        budget_policy = auto_budget_policy(target, draft_head, options, tree_settings, device,
                                           batch_size=prompt_batch_size(inputs, kwargs))
    guarded_streamer = _EndOnce(streamer) if streamer is not None else None
    decode = functools.partial(
        tree_decoding,
        draft_head=draft_head,
        tree_settings=tree_settings,
        streamer=guarded_streamer,
        round_profiler=round_profiler,
        budget_policy=budget_policy,
    )
    try:
        return GenerationMixin.generate(
            target,
            inputs,
            generation_config=generation_config,
            stopping_criteria=stopping_criteria,
            streamer=guarded_streamer,
            custom_generate=decode,
            **kwargs,
        )
    except BaseException:
        # Whatever failed after the prompt was streamed, a consumer waiting on the streamer must not hang.
        if guarded_streamer is not None:
            guarded_streamer.end()
        raise


def _without_consumed_settings(target, generation_config, kwargs):
    """The call's own arguments, as the caller wrote them, minus the settings this package consumes.

    The call reaches `generate` in the form it was made (kwargs stay kwargs, a passed config stays the config), so
    that merging, defaults and warnings are exactly those of a plain call. Consumed settings (tree settings,
    `prompt_lookup_num_tokens`, `stop_strings`) must not reach it: they are cleared in a copy of a passed config,
    or set to None as kwargs where the target's own generation config sets them.
    """
    inherited = [name for name in _CONSUMED_SETTINGS if getattr(target.generation_config, name, None) is not None]
    if generation_config is None:
        return None, {**kwargs, **{name: None for name in inherited}}
    if inherited:
        # `generate` would refill the cleared settings from the target's generation config: fold that config in
        # here (the caller's values win), so there is nothing left to refill.
        merged = copy.deepcopy(target.generation_config)
        merged.update(**generation_config.to_diff_dict())
        generation_config = merged
    else:
        generation_config = copy.deepcopy(generation_config)
    for name in _CONSUMED_SETTINGS:
        if name in generation_config.__dict__:
            setattr(generation_config, name, None)
    return generation_config, kwargs


def _longest_sequence(options: GenerateOptions, inputs, call_kwargs: dict) -> int:
    """The longest sequence the call can produce, as `generate` will bound it (prompt + max_new_tokens, else
    max_length, else transformers' default of 20)."""
    ids = inputs if inputs is not None else call_kwargs.get("input_ids")
    prompt_length = ids.shape[-1] if hasattr(ids, "shape") else 0
    max_new_tokens = options.value("max_new_tokens")
    if max_new_tokens is not None:
        return prompt_length + int(max_new_tokens)
    return max(prompt_length, int(options.value("max_length") or GenerationConfig().max_length))


def _input_device(target: PreTrainedModel, inputs, model_kwargs: dict):
    """Where `generate` will put the prompt: the device of the ids passed, else the target's embeddings'."""
    ids = inputs if inputs is not None else model_kwargs.get("input_ids")
    return ids.device if hasattr(ids, "device") else target.get_input_embeddings().weight.device


def _with_stop_strings(stopping_criteria, stop_strings, tokenizer) -> StoppingCriteriaList:
    # A custom decoding callable does not receive the tokenizer, so the stop-string criterion is built here.
    criteria = StoppingCriteriaList(stopping_criteria or [])
    if stop_strings:
        if tokenizer is None:
            raise ValueError("`stop_strings` needs the tokenizer: pass `tokenizer=` to `generate`.")
        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
    return criteria


class _EndOnce:
    """Forwards to a streamer and makes `end()` idempotent, so that it is called exactly once."""

    def __init__(self, streamer):
        self.streamer = streamer
        self.ended = False

    def put(self, value) -> None:
        self.streamer.put(value)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.streamer.end()


__all__ = ["TreeRoutingGenerate", "enable", "generate_with_draft_head", "is_enabled"]
