"""Building a new head's config from the target's: what must match is copied, the head's own shape is chosen."""

from __future__ import annotations

from ..configuration_jetspec import JetSpecConfig, default_target_layer_ids

# Fields whose values must equal the target's for the head to work with it (hidden size and vocabulary are shared
# through the borrowed embeddings and lm_head; the token ids are read by pipelines and generate).
_INHERITED_FIELDS = (
    "hidden_size",
    "vocab_size",
    "rms_norm_eps",
    "hidden_act",
    "max_position_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def head_config_from_target(
    target_config,
    *,
    mask_token_id: int,
    num_hidden_layers: int = 2,
    num_attention_heads: int | None = None,
    num_key_value_heads: int | None = None,
    head_dim: int | None = None,
    intermediate_size: int | None = None,
    block_size: int = 16,
    target_layer_ids: list[int] | None = None,
    num_tapped_layers: int | None = None,
    causal: bool = True,
) -> JetSpecConfig:
    """A `JetSpecConfig` for a new head on a Qwen3 target.

    Hidden size, vocabulary, norm epsilon, activation, RoPE settings and special token ids come from the target;
    head depth/width, block size, tapped layers, mask token and the causal flag are the caller's. Width fields left
    `None` copy the target's. Without `target_layer_ids`, `num_tapped_layers` (default: one per head layer, as
    the released heads do) layers are spread over the target by the released default rule.
    """
    num_target_layers = int(target_config.num_hidden_layers)
    if target_layer_ids is None:
        target_layer_ids = default_target_layer_ids(num_target_layers, num_tapped_layers or num_hidden_layers)
    bad = [i for i in target_layer_ids if not 0 <= i < num_target_layers]
    if bad:
        raise ValueError(f"target_layer_ids {bad} are outside the target's {num_target_layers} layers.")
    if not 0 <= mask_token_id < target_config.vocab_size:
        raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary (size {target_config.vocab_size}).")
    if block_size < 2:
        raise ValueError("block_size must be at least 2 (the anchor and one drafted position).")

    settings = {name: getattr(target_config, name) for name in _INHERITED_FIELDS if hasattr(target_config, name)}
    rope = getattr(target_config, "rope_parameters", None)
    if rope is not None:
        settings["rope_parameters"] = dict(rope)
    settings.update(
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads or target_config.num_attention_heads,
        num_key_value_heads=num_key_value_heads or target_config.num_key_value_heads,
        head_dim=head_dim or getattr(target_config, "head_dim", None)
        or target_config.hidden_size // target_config.num_attention_heads,
        intermediate_size=intermediate_size or target_config.intermediate_size,
        block_size=block_size,
        num_target_layers=num_target_layers,
        tie_word_embeddings=False,
        dflash_config={
            "target_layer_ids": [int(i) for i in target_layer_ids],
            "mask_token_id": int(mask_token_id),
            "causal_head": bool(causal),
        },
    )
    return JetSpecConfig(**settings)


__all__ = ["head_config_from_target"]
