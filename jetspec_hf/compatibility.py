"""Whether a head's config fits a target's config: the checks that need no weights and no forward pass."""

from __future__ import annotations


def head_fit_problems(head_config, target_config) -> list[str]:
    """What makes a head (its `JetSpecConfig`) unusable with a target (its config); empty when it fits.

    The head borrows the target's embeddings and lm_head (same hidden size and vocabulary) and reads the outputs of
    the target layers it names, so those must exist and be the layers it was trained on.
    """
    problems = []
    text_config = target_config.get_text_config() if hasattr(target_config, "get_text_config") else target_config
    if head_config.hidden_size != text_config.hidden_size:
        problems.append(f"hidden size {head_config.hidden_size} where the target has {text_config.hidden_size}")
    if head_config.vocab_size != text_config.vocab_size:
        problems.append(f"vocabulary of {head_config.vocab_size} tokens where the target has {text_config.vocab_size}")
    num_layers = text_config.num_hidden_layers
    if head_config.num_target_layers is not None and head_config.num_target_layers != num_layers:
        problems.append(f"trained for a {head_config.num_target_layers}-layer target; this target has {num_layers}")
    tapped = head_config.dflash_config.get("target_layer_ids") or []
    outside = [layer for layer in tapped if not 0 <= layer < num_layers]
    if outside:
        problems.append(f"taps target layers {outside}, which a {num_layers}-layer target does not have")
    return problems


__all__ = ["head_fit_problems"]
