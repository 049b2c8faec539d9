"""The released checkpoint format of JetSpec / DFlash heads, and keeping `AutoModel` from misreading it.

The published heads were written by a `Qwen3PreTrainedModel` subclass, so their `config.json` says
`"model_type": "qwen3"` with `"architectures": ["DFlashDraftModel"]`, and adds `block_size`, `num_target_layers` and
`dflash_config`. `JetSpecConfig` reads that spelling; this module knows what else the format implies.

For `AutoModel`, `model_type: qwen3` means a plain `Qwen3Model`: it would build one, load the decoder layers and
silently drop `fc` / `hidden_norm` while leaving the embeddings random. `guard_auto_model()` makes `AutoModel`
refuse such a folder with a message that says how to load it.
"""

from __future__ import annotations

import functools
from typing import Any

RELEASED_MODEL_TYPE = "qwen3"
RELEASED_ARCHITECTURE = "DFlashDraftModel"

# The Qwen3 decoder fields of a released config.json, all written (as transformers 4.x wrote every field of the
# config class). Token ids are written only when set, and the RoPE settings as `rope_theta` + `rope_scaling`.
RELEASED_DECODER_FIELDS = (
    "attention_bias",
    "attention_dropout",
    "head_dim",
    "hidden_act",
    "hidden_size",
    "initializer_range",
    "intermediate_size",
    "layer_types",
    "max_position_embeddings",
    "max_window_layers",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "rms_norm_eps",
    "sliding_window",
    "tie_word_embeddings",
    "use_cache",
    "use_sliding_window",
    "vocab_size",
)
RELEASED_TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")

# Arguments of `from_pretrained` that say where a config.json is fetched from.
_HUB_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")
# Marks the wrapped `AutoModel.from_pretrained`, so that the guard is installed once however often it is asked for.
_GUARD_FLAG = "_jetspec_refuses_released_heads"


def hub_arguments(load_kwargs: dict) -> dict:
    """The `from_pretrained` arguments among `load_kwargs` that say where files are fetched from (those set)."""
    return {name: load_kwargs[name] for name in _HUB_ARGUMENTS if load_kwargs.get(name) is not None}


def is_released_head_config(config_dict: dict[str, Any]) -> bool:
    """Whether a config.json (as a dict) describes a head in the released format."""
    return config_dict.get("model_type") == RELEASED_MODEL_TYPE and RELEASED_ARCHITECTURE in (
        config_dict.get("architectures") or []
    )


def released_config_dict(config, dtype) -> dict[str, Any]:
    """The config.json of a head in the released format, as the published heads spell it.

    Args:
        config: the head's `JetSpecConfig`.
        dtype: the dtype its weights are saved in.

    The tree defaults (`tree_budget`, `tree_width`, `tree_depth`) are not part of the format and are left out.
    """
    import transformers

    layer_ids = config.dflash_config.get("target_layer_ids")
    missing = [
        name
        for name, value in (
            ("num_target_layers", config.num_target_layers),
            ("dflash_config.target_layer_ids", layer_ids),
            ("dflash_config.mask_token_id", config.mask_token_id),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            f"The released format needs {', '.join(missing)}, which this head's config does not set: set them on "
            "`head.config` (they must describe the target the head was trained for) before exporting."
        )
    rope = dict(config.rope_parameters or {"rope_type": "default", "rope_theta": 10000.0})
    released = {field: getattr(config, field) for field in RELEASED_DECODER_FIELDS}
    token_ids = {field: getattr(config, field) for field in RELEASED_TOKEN_ID_FIELDS}
    released.update({field: value for field, value in token_ids.items() if value is not None})
    released.update(
        architectures=[RELEASED_ARCHITECTURE],
        model_type=RELEASED_MODEL_TYPE,
        dtype=str(dtype).removeprefix("torch."),
        transformers_version=transformers.__version__,
        rope_theta=rope.pop("rope_theta"),
        # transformers 4.x kept only non-default RoPE variants here (yarn, linear, ...), with their `rope_type`.
        rope_scaling=None if rope.get("rope_type", "default") == "default" else rope,
        block_size=config.block_size,
        num_target_layers=config.num_target_layers,
        dflash_config={
            # The published reference reads `causal_head`; vLLM reads `causal` here, else the top-level
            # `is_causal`, else treats only sliding-window layers as causal: all three are written so that every
            # engine runs the head with the mask it was trained with.
            "causal": config.causal_head,
            "causal_head": config.causal_head,
            "mask_token_id": config.mask_token_id,
            "target_layer_ids": list(layer_ids),
        },
        is_causal=config.causal_head,
    )
    return dict(sorted(released.items()))


def released_head_error(name_or_path: str) -> ValueError:
    """The error `AutoModel` raises for a released-format head, naming the loader to use."""
    return ValueError(
        f"{name_or_path} holds a JetSpec / DFlash draft head in the released checkpoint format (model_type "
        f"{RELEASED_MODEL_TYPE!r}, architectures [{RELEASED_ARCHITECTURE!r}]). AutoModel would load it as a plain "
        "Qwen3Model and silently drop the head's `fc` and `hidden_norm` weights. Load it with "
        f"`jetspec_hf.JetSpecDraftModel.from_pretrained({name_or_path!r})`; to run the repository's own modeling "
        "code instead, pass `trust_remote_code=True` (it must ship an `auto_map`)."
    )


def _config_dict(name_or_path, kwargs: dict) -> dict | None:
    """The config.json that `from_pretrained(name_or_path, **kwargs)` would read, or `None` when it cannot be read
    (the real call then reports why)."""
    from transformers import PreTrainedConfig

    config = kwargs.get("config")
    if isinstance(config, PreTrainedConfig):
        return config.to_dict()
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(name_or_path, **hub_arguments(kwargs))
    except (OSError, ValueError):
        return None
    return config_dict


def guard_auto_model() -> None:
    """Make `AutoModel.from_pretrained` refuse a released-format head (see `released_head_error`).

    Only `AutoModel` is wrapped (the Auto class a released repository advertises); the check reads the config once
    more, from the same place, before any weight is loaded. With `trust_remote_code=True` and an `auto_map`, the
    repository's own code is used as before.
    """
    from transformers import AutoModel

    if getattr(AutoModel.from_pretrained, _GUARD_FLAG, False):
        return
    stock_from_pretrained = AutoModel.from_pretrained.__func__

    @functools.wraps(stock_from_pretrained)
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config_dict = _config_dict(pretrained_model_name_or_path, kwargs)
        if config_dict is not None and is_released_head_config(config_dict):
            runs_remote_code = kwargs.get("trust_remote_code") and cls.__name__ in (config_dict.get("auto_map") or {})
            if not runs_remote_code:
                raise released_head_error(str(pretrained_model_name_or_path))
        return stock_from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    setattr(from_pretrained, _GUARD_FLAG, True)
    AutoModel.from_pretrained = classmethod(from_pretrained)


__all__ = [
    "RELEASED_ARCHITECTURE",
    "RELEASED_DECODER_FIELDS",
    "RELEASED_MODEL_TYPE",
    "RELEASED_TOKEN_ID_FIELDS",
    "guard_auto_model",
    "hub_arguments",
    "is_released_head_config",
    "released_config_dict",
    "released_head_error",
]
