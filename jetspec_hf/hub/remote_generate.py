"""JetSpec tree decoding as a Hub `custom_generate` function, for users who do not install `jetspec_hf`.

`prepare_hub_folder` copies this module to `custom_generate/generate.py` of a head repository (its package
imports flattened, `HEAD_LOCATION` set to the repository), so that

```python
out = target.generate(**inputs, custom_generate="org/head", trust_remote_code=True, max_new_tokens=256)
```

loads the head from that repository and runs the tree loop. Inside the package the same function works with an
explicit `draft_head=` (a folder, a repo id or a loaded head).
"""

from __future__ import annotations

from ..generation.routing import generate_with_draft_head
from ..modeling_jetspec import JetSpecDraftModel

# Where the head's weights live (repo id or folder); written by `prepare_hub_folder` into the copied module.
HEAD_LOCATION = None

# `generate(custom_generate=<repo>, revision=..., cache_dir=...)` hands these to the code loader AND to this
# function. They say where to fetch files from, so the head is fetched with them too (same revision as the code),
# and they must not reach the target's forward.
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")

# Heads already loaded in this process, keyed by location, hub arguments, dtype and device: `generate` is called
# once per prompt, and reading the weights each time would cost more than a short generation.
_LOADED_HEADS: dict[tuple, JetSpecDraftModel] = {}


def load_draft_head(location: str, model, **hub_kwargs) -> JetSpecDraftModel:
    """Load (once per process) the head at `location`, in `model`'s dtype and on its device.

    Args:
        location: a repo id or a local folder, in the package's format or the released one.
        model: the target the head will draft for.
        hub_kwargs: `revision`, `cache_dir`, `token`, ... as for `from_pretrained`.
    """
    key = (str(location), tuple(sorted((name, str(value)) for name, value in hub_kwargs.items())),
           str(model.dtype), str(model.device))
    head = _LOADED_HEADS.get(key)
    if head is None:
        head = JetSpecDraftModel.from_pretrained(location, dtype=model.dtype, **hub_kwargs)
        head = head.to(model.device).eval()
        _LOADED_HEADS[key] = head
    return head


def generate(
    model,
    inputs=None,
    generation_config=None,
    logits_processor=None,
    stopping_criteria=None,
    prefix_allowed_tokens_fn=None,
    synced_gpus=None,
    assistant_model=None,
    streamer=None,
    negative_prompt_ids=None,
    negative_prompt_attention_mask=None,
    *,
    draft_head=None,
    **kwargs,
):
    """`model.generate(...)` with JetSpec tree decoding; the `custom_generate` entry point of a head repository.

    transformers calls it with the target as `model` and every argument of the user's `generate` call.

    Args:
        model: a Qwen3 / Qwen3-MoE target (any attention backend but paged attention).
        draft_head: the head to draft with: a repo id or folder, or a loaded `JetSpecDraftModel` of this module.
            Defaults to the repository this code was published in (`HEAD_LOCATION`).
        tree_budget, tree_width, tree_depth: tree shape per round (default: the head config's values, else
            `tree_budget="auto"`, chosen every round from this machine's measured costs).
        kwargs: everything `generate` accepts (`max_new_tokens`, `do_sample`, `stop_strings` with `tokenizer`,
            ...); `revision`, `cache_dir`, `token` also select where the head is fetched from.

    Returns:
        What `generate` returns: the token ids, or a `JetSpecGenerateOutput` with `return_dict_in_generate=True`.
    """
    hub_kwargs = {name: kwargs.pop(name) for name in HUB_KWARGS if name in kwargs}
    hub_kwargs = {name: value for name, value in hub_kwargs.items() if value is not None}
    if assistant_model is not None:
        raise ValueError(
            "This custom_generate function drafts with the repository's JetSpec head; do not pass `assistant_model` "
            "(use `draft_head=` to draft with another head)."
        )
    if draft_head is None:
        draft_head = HEAD_LOCATION
    if draft_head is None:
        raise ValueError("No draft head: pass `draft_head=` (a repo id, a folder or a loaded JetSpecDraftModel).")
    if not isinstance(draft_head, JetSpecDraftModel):
        if not isinstance(draft_head, (str, bytes)) and not hasattr(draft_head, "__fspath__"):
            raise TypeError(
                f"`draft_head` must be a repo id, a folder or a JetSpecDraftModel, got {type(draft_head).__name__}. "
                "A head loaded with the installed `jetspec_hf` package runs through `jetspec_hf.enable(target)` and "
                "`target.generate(..., assistant_model=head)` instead."
            )
        draft_head = load_draft_head(draft_head, model, **hub_kwargs)

    # Only what the caller set is passed on, so that `generate`'s own defaults (and the model's generation config)
    # apply to the rest exactly as in a plain call.
    passed = {
        "generation_config": generation_config,
        "logits_processor": logits_processor,
        "stopping_criteria": stopping_criteria,
        "prefix_allowed_tokens_fn": prefix_allowed_tokens_fn,
        "synced_gpus": synced_gpus,
        "streamer": streamer,
        "negative_prompt_ids": negative_prompt_ids,
        "negative_prompt_attention_mask": negative_prompt_attention_mask,
    }
    kwargs.update({name: value for name, value in passed.items() if value is not None})
    return generate_with_draft_head(model, inputs, draft_head=draft_head, **kwargs)


__all__ = ["HEAD_LOCATION", "generate", "load_draft_head"]
