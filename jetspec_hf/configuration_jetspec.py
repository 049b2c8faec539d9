"""Configuration of a JetSpec / DFlash draft head."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, Qwen3Config

# The released checkpoints say `"model_type": "qwen3"`; that spelling is accepted on load (see released_format.py).
from .released_format import RELEASED_ARCHITECTURE, RELEASED_MODEL_TYPE  # noqa: F401  (importable from here too)
from .speculators_format import is_speculators_config, jetspec_config_dict

# The tree settings `generate` accepts (the lookup branch keeps transformers' own name for prompt lookup): the one
# list every module reads.
# `draft_window` is the head's: it limits how much of the context each head layer attends (see
# `JetSpecConfig.layer_windows`); it resolves like the tree's settings.
TREE_SETTING_NAMES = (
    "tree_budget", "tree_width", "tree_depth", "tree_expansion", "draft_window", "prompt_lookup_num_tokens",
)

# Tree settings used where neither the `generate` call, the generation configs nor the head's folder set them. The
# budget is chosen every round from this machine's measured costs and the head's calibrated confidence
# (`generation/budget/auto.py`); an integer fixes it.
DEFAULT_TREE_SETTINGS = {
    "tree_budget": "auto", "tree_width": 16, "tree_expansion": "node", "prompt_lookup_num_tokens": 0,
}


def default_target_layer_ids(num_target_layers: int, num_tapped_layers: int) -> list[int]:
    """The tapped target layers a released head uses when its config does not list them.

    One layer: the middle one. ``k`` layers: evenly spaced from layer 1 to layer ``num_target_layers - 3``.
    """
    if num_tapped_layers == 1:
        return [num_target_layers // 2]
    start, end = 1, num_target_layers - 3
    span = end - start
    return [int(round(start + i * span / (num_tapped_layers - 1))) for i in range(num_tapped_layers)]


@strict
class JetSpecConfig(Qwen3Config):
    r"""
    Configuration of a [`JetSpecDraftModel`]: a few Qwen3 decoder layers that read hidden states tapped from a
    frozen Qwen3 target and draft the next `block_size - 1` tokens in one forward pass.

    The Qwen3 decoder fields (`hidden_size`, `num_hidden_layers`, `num_attention_heads`, ...) describe the head
    itself; `hidden_size` and `vocab_size` must equal the target's.

    Args:
        block_size (`int`, defaults to 16):
            Length of the drafted block: the anchor token followed by `block_size - 1` mask tokens.
        num_target_layers (`int`, *optional*):
            Number of decoder layers of the target the head was trained for.
        dflash_config (`dict`, *optional*):
            The released checkpoints' sub-config: `target_layer_ids` (tapped target layers, 0-based; the head reads
            the OUTPUT of each), `mask_token_id` (token whose embedding fills unknown block positions) and
            `causal_head` (`True` for JetSpec's causal block mask, `False` for DFlash's bidirectional one). The
            mask may also be declared as `dflash_config.causal` or a top-level `is_causal` (vLLM's spellings):
            every key present must agree, and the head keeps `causal_head`.
        draft_vocab_size (`int`, *optional*):
            When set, the head ranks only this many target tokens (its `draft_vocab_ids` buffer, the most frequent
            labels of its training data): the draft's vocabulary projection shrinks by `vocab_size /
            draft_vocab_size`. Verification still uses the target's whole vocabulary, so output is unchanged; a
            token outside the draft vocabulary is simply never drafted.
        layer_types, sliding_window (*optional*):
            Qwen3's per-layer attention kinds. A head layer declared `"sliding_attention"` attends, from a block
            row at position p, only the keys at positions > p - `sliding_window` (transformers' sliding-window rule)
            : a draft window over the context. The window is honoured as declared whether or not
            `use_sliding_window` is set (heads that declare windows through `layer_types` often leave it off).
        tree_budget, tree_width, tree_depth (`int`, *optional*):
            Where version 0.1 kept a head's tree defaults. They are read as the head's defaults when its
            `generation_config.json` does not set them; new folders keep them in `generation_config.json`, like
            any generation setting (see `JetSpecDraftModel.save_pretrained`).

    Example:

    ```python
    >>> from jetspec_hf import JetSpecConfig, JetSpecDraftModel
    >>> config = JetSpecConfig(hidden_size=256, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
    ...                        head_dim=64, intermediate_size=768, vocab_size=4096, num_target_layers=6,
    ...                        dflash_config={"mask_token_id": 1, "causal_head": True})
    >>> head = JetSpecDraftModel(config)
    ```
    """

    model_type = "jetspec"

    block_size: int = 16
    num_target_layers: int | None = None
    dflash_config: dict | None = None
    draft_vocab_size: int | None = None
    tree_budget: int | None = None
    tree_width: int | None = None
    tree_depth: int | None = None

    def __post_init__(self, **kwargs):
        # Qwen3Config drops `sliding_window` unless `use_sliding_window` is set, even where `layer_types` declares
        # sliding layers: keep the declared window for those.
        declared_window = self.sliding_window if "sliding_attention" in (self.layer_types or []) else None
        dflash_config = dict(self.dflash_config or {})
        dflash_config["causal_head"] = resolve_causality(kwargs.pop("is_causal", None), dflash_config)
        dflash_config.pop("causal", None)
        if dflash_config.get("target_layer_ids") is None and self.num_target_layers is not None:
            dflash_config["target_layer_ids"] = default_target_layer_ids(
                self.num_target_layers, self.num_hidden_layers
            )
        dflash_config.setdefault("causal_head", True)
        dflash_config.setdefault("mask_token_id", None)
        self.dflash_config = dflash_config
        _check_head_fields(self.block_size, dflash_config)
        if self.draft_vocab_size is not None and (isinstance(self.draft_vocab_size, bool) or not isinstance(
                self.draft_vocab_size, int) or not 1 <= self.draft_vocab_size <= self.vocab_size):
            raise ValueError(f"draft_vocab_size must be an integer in 1..vocab_size ({self.vocab_size}), got "
                             f"{self.draft_vocab_size!r}.")
        super().__post_init__(**kwargs)
        if declared_window is not None and self.sliding_window is None:
            self.sliding_window = declared_window
        if "sliding_attention" in (self.layer_types or []) and (
                isinstance(self.sliding_window, bool) or not isinstance(self.sliding_window, int)
                or self.sliding_window < 1):
            raise ValueError(
                f"The head's layer_types declare sliding-attention layers, but sliding_window is "
                f"{self.sliding_window!r}: a sliding layer needs a window of at least one position."
            )

    @property
    def layer_windows(self) -> list[int | None]:
        """Per head layer, how many positions back a block row attends (`sliding_window` for a layer that
        `layer_types` declares `"sliding_attention"`), or `None` for full attention over the context."""
        types = self.layer_types or ["full_attention"] * self.num_hidden_layers
        return [self.sliding_window if kind == "sliding_attention" else None for kind in types]

    # The three fields below are also read at the top level by transformers' built-in linear DFlash path
    # (`generation_config.speculation_type="dflash"`), so they are exposed as properties.
    @property
    def target_layer_ids(self) -> list[int]:
        """Tapped target layers (0-based): the head reads the output of each."""
        return list(self.dflash_config["target_layer_ids"])

    @property
    def mask_token_id(self) -> int | None:
        """Token id whose embedding fills the not-yet-known block positions."""
        return self.dflash_config["mask_token_id"]

    @property
    def causal_head(self) -> bool:
        """`True` for JetSpec's causal block mask, `False` for DFlash's bidirectional one."""
        return bool(self.dflash_config["causal_head"])

    @property
    def max_tree_depth(self) -> int:
        """The deepest tree level a drafted block can fill."""
        return self.block_size - 1

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if is_speculators_config(config_dict):
            # vLLM's `speculators` layout (see speculators_format.py): read as this package's fields first.
            config_dict = jetspec_config_dict(config_dict)
        return cls._normalize_released_format(config_dict), kwargs

    @classmethod
    def _normalize_released_format(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        """Accept a released DFlash/JetSpec config (`model_type: qwen3`) as a `jetspec` config."""
        model_type = config_dict.get("model_type")
        if "is_causal" in config_dict:
            # Read with the other causality keys (`resolve_causality`); the head stores it as `causal_head`.
            config_dict = dict(config_dict)
            dflash = dict(config_dict.get("dflash_config") or {})
            dflash["causal_head"] = resolve_causality(config_dict.pop("is_causal"), dflash)
            dflash.pop("causal", None)
            config_dict["dflash_config"] = dflash
        looks_released = RELEASED_ARCHITECTURE in (config_dict.get("architectures") or []) or "dflash_config" in config_dict
        if looks_released and model_type not in (RELEASED_MODEL_TYPE, cls.model_type):
            raise ValueError(
                f"This config.json describes a draft head ({RELEASED_ARCHITECTURE} / `dflash_config`) with "
                f"`model_type: {model_type}`, but the released head format is a stack of Qwen3 decoder layers "
                f"(`model_type: {RELEASED_MODEL_TYPE}`); loading it as another model type would build the wrong "
                f"layers. Fix the folder's model_type (to {RELEASED_MODEL_TYPE!r}) if the weights are a Qwen3-layer "
                "head."
            )
        if model_type != RELEASED_MODEL_TYPE:
            return config_dict
        if "dflash_config" not in config_dict and "block_size" not in config_dict:
            raise ValueError(
                "This config.json describes a plain Qwen3 model, not a draft head: it has neither `dflash_config` "
                "nor `block_size`. Load a target with `AutoModelForCausalLM`, and a head with `JetSpecDraftModel`."
            )
        return {**config_dict, "model_type": cls.model_type}


# Where a head's block mask is declared, by whom: the published reference's key, vLLM's spelling inside the
# sub-config (DFlash2-style heads) and vLLM's top-level key. A config may carry any of them; all that are present
# must agree. None present means causal (a JetSpec head).
CAUSALITY_KEYS = ("dflash_config.causal_head", "dflash_config.causal", "is_causal")


def resolve_causality(is_causal, dflash_config: dict) -> bool:
    """Whether a head's block mask is causal, from every key that can say so (`CAUSALITY_KEYS`); keys that
    contradict each other are an error naming them."""
    declared = {
        "dflash_config.causal_head": dflash_config.get("causal_head"),
        "dflash_config.causal": dflash_config.get("causal"),
        "is_causal": is_causal,
    }
    declared = {key: value for key, value in declared.items() if value is not None}
    values = set(map(bool, declared.values())) if all(isinstance(v, bool) for v in declared.values()) else None
    if values is None:
        raise ValueError(f"The head's causality keys must be true or false, got {declared}.")
    if len(values) > 1:
        raise ValueError(
            "The head's config declares its block mask both causal and bidirectional: "
            + ", ".join(f"{key}={value}" for key, value in declared.items())
            + ". Keep the keys that describe how the head was trained (they must agree)."
        )
    return values.pop() if values else True


def _check_head_fields(block_size, dflash_config: dict) -> None:
    """The head-specific fields must have the types and ranges the head's forward uses them with."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size must be an integer >= 2 (the anchor and at least one drafted position), got "
                         f"{block_size!r}.")
    if not isinstance(dflash_config.get("causal_head"), bool):
        raise ValueError(f"dflash_config.causal_head must be true or false, got {dflash_config.get('causal_head')!r}.")
    mask = dflash_config.get("mask_token_id")
    if mask is not None and (isinstance(mask, bool) or not isinstance(mask, int) or mask < 0):
        raise ValueError(f"dflash_config.mask_token_id must be a token id (an integer >= 0), got {mask!r}.")
    layers = dflash_config.get("target_layer_ids")
    if layers is not None and (not isinstance(layers, list) or not layers
                               or any(isinstance(i, bool) or not isinstance(i, int) for i in layers)):
        raise ValueError(f"dflash_config.target_layer_ids must be a non-empty list of layer indices, got {layers!r}.")


# Registered when this module loads, so that AutoConfig reads `model_type: jetspec` without trust_remote_code.
AutoConfig.register(JetSpecConfig.model_type, JetSpecConfig, exist_ok=True)

__all__ = ["CAUSALITY_KEYS", "DEFAULT_TREE_SETTINGS", "TREE_SETTING_NAMES", "JetSpecConfig", "default_target_layer_ids",
           "resolve_causality"]
