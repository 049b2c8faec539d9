"""Building a new head's config from the target's: what must match is copied, the head's own shape is chosen."""

from __future__ import annotations

import torch

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
    draft_vocab_size: int | None = None,
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
        draft_vocab_size=draft_vocab_size,
        dflash_config={
            "target_layer_ids": [int(i) for i in target_layer_ids],
            "mask_token_id": int(mask_token_id),
            "causal_head": bool(causal),
        },
    )
    return JetSpecConfig(**settings)


def draft_vocabulary(records: list[dict], size: int, vocab_size: int, cache=None) -> torch.Tensor:
    """The `size` target tokens most often labelled in the trained positions of `records` (ties by token id), in
    descending frequency: a head's draft vocabulary. Labels are a record's own `labels`, else its feature cache's
    (the target's greedy tokens), else its tokens."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for index, record in enumerate(records):
        if record.get("labels") is not None:
            labels = torch.tensor(record["labels"])
        elif cache is not None and cache.has_labels:
            labels = cache.get(index).labels.long()
        else:
            labels = torch.tensor(record["input_ids"])
        counts += torch.bincount(labels[max(1, record["prompt_length"]):], minlength=vocab_size)
    order = sorted(range(vocab_size), key=lambda token: (-int(counts[token]), token))
    return torch.tensor(order[:size], dtype=torch.long)


# What a saved head must share with the one the flags describe for its weights to be the new run's start.
SAME_ARCHITECTURE = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "vocab_size", "draft_vocab_size", "block_size", "target_layer_ids", "mask_token_id",
    "causal_head", "layer_windows",
)


def initialise_from_head(head, name_or_path: str) -> None:
    """Start `head` from a saved head's weights and draft vocabulary (`--init-from-head`).

    Raises `ValueError` naming every setting in which the saved head differs from `head` (the flags of the new run
    describe `head`; a saved head of another shape cannot be its start).
    """
    from ..modeling_jetspec import JetSpecDraftModel

    saved = JetSpecDraftModel.from_pretrained(name_or_path, dtype=torch.float32)
    differences = [
        f"{name} {getattr(saved.config, name)!r} (the flags give {getattr(head.config, name)!r})"
        for name in SAME_ARCHITECTURE if getattr(saved.config, name) != getattr(head.config, name)
    ]
    if differences:
        raise ValueError(
            f"--init-from-head {name_or_path}: the saved head is not the head these flags describe: "
            + "; ".join(differences) + ". Pass the saved head's settings (its config.json says them)."
        )
    head.load_state_dict(saved.state_dict())


def initialise_from_target(head, target) -> None:
    """Start `head` from the target's last `num_hidden_layers` decoder layers (their attention, MLP and norms),
    the target's final norm, and an `fc` that passes the last tapped layer through (normalised by the first copied
    layer's input norm, as the target normalises that layer's input)."""
    layers = target.base_model.layers
    count = len(head.layers)
    with torch.no_grad():
        for head_layer, source in zip(head.layers, list(layers)[-count:]):
            state = {name: value for name, value in source.state_dict().items()}
            try:
                missing, unexpected = head_layer.load_state_dict(state, strict=False)
            except RuntimeError as error:  # a size mismatch
                raise ValueError(f"the head's layers do not have the target's shapes ({error}): use the target's "
                                 "widths to start from its layers.") from error
            if unexpected or [name for name in missing if not name.endswith(("q_norm.weight", "k_norm.weight"))]:
                raise ValueError(f"the head's layers do not have the target's shapes (missing {missing}, unexpected "
                                 f"{unexpected}): use the target's widths to start from its layers.")
        head.norm.weight.copy_(target.base_model.norm.weight)
        hidden = head.config.hidden_size
        head.fc.weight.zero_()
        head.fc.weight[:, -hidden:] = torch.eye(hidden)
        head.hidden_norm.weight.copy_(list(layers)[-count].input_layernorm.weight)


__all__ = ["draft_vocabulary", "head_config_from_target", "initialise_from_head", "initialise_from_target"]
