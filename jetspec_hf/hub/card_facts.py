"""The facts a model card states about a model, computed from its config and weight files, and how a value is
printed in a card's Markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..configuration_jetspec import DEFAULT_TREE_SETTINGS

# The Markdown shown where a value is unknown.
MISSING = "–"


def format_count(count: int | None) -> str:
    """`1234567` -> `"1.23M"`: parameter counts as cards usually print them."""
    if count is None:
        return MISSING
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def table_cell(value: Any, digits: int = 2, suffix: str = "") -> str:
    """One Markdown table cell; `None` and absent values print as a dash, and `|` cannot break the row."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}".replace("|", "\\|").replace("\n", " ")


def dtype_name(dtype: Any) -> str | None:
    """`torch.bfloat16` or `"bfloat16"` -> `"bfloat16"`."""
    if dtype is None:
        return None
    return str(dtype).removeprefix("torch.")


def count_safetensors_parameters(folder: str | Path) -> int | None:
    """Number of parameters stored in a folder's `*.safetensors` files, read from their headers only."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                count = 1
                for size in weights.get_slice(name).get_shape():
                    count *= size
                total += count
    return total


def describe_head(config, num_parameters: int | None = None, generation_config=None) -> dict:
    """The facts of a head (a `JetSpecConfig`, and its generation config) that its card states: kind, block size,
    tapped layers, size, tree defaults."""
    causal = config.causal_head

    def tree_default(name: str, fallback):
        for source in (generation_config, config):
            value = getattr(source, name, None)
            if value is not None:
                return value
        return fallback

    tree_defaults = {
        "tree_budget": tree_default("tree_budget", DEFAULT_TREE_SETTINGS["tree_budget"]),
        "tree_width": tree_default("tree_width", DEFAULT_TREE_SETTINGS["tree_width"]),
        "tree_depth": tree_default("tree_depth", config.block_size - 1),
    }
    layer_ids = config.dflash_config.get("target_layer_ids") or []
    return {
        "causal": causal,
        "kind": "jetspec" if causal else "dflash",
        "kind_name": "JetSpec (causal block mask)" if causal else "DFlash (bidirectional block mask)",
        "block_size": config.block_size,
        "draft_depth": config.block_size - 1,
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "target_layer_ids": list(layer_ids),
        "target_layers": ", ".join(str(layer) for layer in layer_ids) or MISSING,
        "num_target_layers": config.num_target_layers,
        "mask_token_id": config.mask_token_id,
        "num_parameters": num_parameters,
        "parameters": format_count(num_parameters),
        "dtype": dtype_name(getattr(config, "dtype", None)) or MISSING,
        **tree_defaults,
    }


def describe_causal_lm(config, num_parameters: int | None = None) -> dict:
    """The facts of a plain causal LM that its card states."""
    return {
        "model_type": getattr(config, "model_type", None) or MISSING,
        "architecture": ", ".join(getattr(config, "architectures", None) or []) or MISSING,
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_key_value_heads": getattr(config, "num_key_value_heads", None),
        "intermediate_size": getattr(config, "intermediate_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
        "num_parameters": num_parameters,
        "parameters": format_count(num_parameters),
        "dtype": dtype_name(getattr(config, "dtype", None)) or MISSING,
    }


__all__ = [
    "MISSING",
    "count_safetensors_parameters",
    "describe_causal_lm",
    "describe_head",
    "dtype_name",
    "format_count",
    "table_cell",
]
