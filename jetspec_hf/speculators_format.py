"""The DFlash checkpoint layout of vLLM's `speculators` library: its config.json, read and written (its weights:
`speculators_weights.py`).

What the layout holds (speculators 0.9.0, `speculators/models/dflash`; a folder written here loads with its own
`DFlashSpeculatorConfig` and `DFlashDraftModel`, see the README):

- config.json: `speculators_model_type: "dflash"` and no `model_type`; the draft's decoder layers as a Qwen3 config
  under `transformer_layer_config`; `aux_hidden_state_layer_ids`, indices into the target's hidden states (0 is the
  embeddings, k the output of layer k - 1: this package's `target_layer_ids` + 1); `block_size`, `mask_token_id`,
  `draft_vocab_size`, `target_hidden_size`, `sliding_window_non_causal`, `sample_from_anchor`; and
  `speculators_config` (a greedy proposal of `speculative_tokens`, the verifier's name and architectures).
- model.safetensors: the body under this package's names (`layers.*`, `fc`, `hidden_norm`, `norm`); with a draft
  vocabulary also `d2t` (`target id = i + d2t[i]`: an offset, EAGLE-3 style), `t2d` (a bool mask over the target
  vocabulary) and `lm_head.weight` (the target's lm_head rows at the draft ids, in target-id order). The embeddings,
  a full-vocabulary lm_head and `verifier_norm` / `verifier_lm_head` are rebuilt from the verifier when speculators
  loads a folder (older versions also stored `embed_tokens` and a full lm_head: read here, never written).
- masks: every full-attention layer attends bidirectionally inside the block, whatever the head was trained with; a
  sliding-window layer is causal unless `sliding_window_non_causal`.
"""

from __future__ import annotations

from typing import Any

from .released_format import RELEASED_DECODER_FIELDS, RELEASED_TOKEN_ID_FIELDS

SPECULATORS_MODEL_TYPE = "dflash"
# What speculators' own `save_pretrained` writes (the model class name), not the config class's default.
SPECULATORS_ARCHITECTURE = "DFlashDraftModel"
# The speculators release whose layout is written here (checked against it).
SPECULATORS_LAYOUT_VERSION = "0.9.0"
# The values speculators' config class assumes for fields a config.json leaves out.
SPECULATORS_DEFAULTS = {"draft_vocab_size": 32000, "block_size": 8, "mask_token_id": None,
                        "target_hidden_size": None, "sliding_window_non_causal": False, "sample_from_anchor": False}
# The draft's decoder layers may be declared as either: speculators builds the same Qwen3-style layers from both.
LAYER_CONFIG_MODEL_TYPES = ("qwen3", "llama")
# Top-level keys that describe the file, not the head.
_METADATA_KEYS = ("architectures", "auto_map", "speculators_version", "transformers_version", "tie_word_embeddings")
# Keys of `transformer_layer_config` that describe the object it was saved from, not the layers.
_LAYER_METADATA_KEYS = ("architectures", "auto_map", "model_type", "transformers_version", "_name_or_path", "dtype",
                        "tie_word_embeddings")


def is_speculators_config(config_dict: dict[str, Any]) -> bool:
    """Whether a config.json (as a dict) was written in speculators' layout."""
    return "speculators_model_type" in config_dict


# --- config.json, read ---------------------------------------------------------------------------------------------

def jetspec_config_dict(config_dict: dict[str, Any]) -> dict[str, Any]:
    """A speculators DFlash config.json as the fields of a `JetSpecConfig` (`model_type: jetspec`).

    Raises `ValueError` naming the field for what a JetSpec head cannot represent.
    """
    kind = config_dict["speculators_model_type"]
    if kind != SPECULATORS_MODEL_TYPE:
        raise ValueError(f"speculators_model_type is {kind!r}: only speculators' {SPECULATORS_MODEL_TYPE!r} heads are "
                         "JetSpec / DFlash heads (another algorithm's weights would build the wrong model).")
    fields = {**SPECULATORS_DEFAULTS, **config_dict}
    layers = _layer_fields(fields.get("transformer_layer_config") or {})
    if fields["sample_from_anchor"]:
        raise ValueError("sample_from_anchor is true: that head predicts a token from its anchor row too, but a "
                         "JetSpec head's anchor row is the known token and only the rows after it draft.")
    if fields["target_hidden_size"] not in (None, layers.get("hidden_size")):
        raise ValueError(f"target_hidden_size is {fields['target_hidden_size']}, not the head's hidden size "
                         f"{layers.get('hidden_size')}: a JetSpec head reads a target of its own hidden size.")
    aux = fields.get("aux_hidden_state_layer_ids")
    if not isinstance(aux, list) or not aux or any(isinstance(i, bool) or not isinstance(i, int) or i < 1
                                                    for i in aux):
        raise ValueError(f"aux_hidden_state_layer_ids must list target hidden-state indices >= 1 (0 is the "
                         f"embeddings, which a JetSpec head does not read), got {aux!r}.")
    vocab_size = layers.get("vocab_size")
    draft_vocab_size = fields["draft_vocab_size"]
    if isinstance(vocab_size, int) and isinstance(draft_vocab_size, int) and draft_vocab_size > vocab_size:
        unset = "" if "draft_vocab_size" in config_dict else " (speculators' default: config.json sets none)"
        raise ValueError(f"draft_vocab_size is {draft_vocab_size}{unset}, more than the target's {vocab_size} tokens.")
    normalised = {key: value for key, value in config_dict.items()
                  if key not in (*SPECULATORS_DEFAULTS, *_METADATA_KEYS, "speculators_model_type",
                                 "speculators_config", "transformer_layer_config", "aux_hidden_state_layer_ids")}
    normalised.update(layers)
    normalised.update(
        model_type="jetspec",
        block_size=fields["block_size"],
        # Equal sizes mean the whole vocabulary: speculators stores no mapping then.
        draft_vocab_size=None if draft_vocab_size == vocab_size else draft_vocab_size,
        dflash_config={"target_layer_ids": [index - 1 for index in aux], "mask_token_id": fields["mask_token_id"],
                       # The mask speculators runs the head with (and vLLM, which reads no causality key from this
                       # layout): a causal JetSpec head exported here comes back bidirectional, as it is served.
                       "causal_head": _speculators_causality(layers, fields["sliding_window_non_causal"])},
        tree_depth=_tree_depth(config_dict.get("speculators_config") or {}, fields["block_size"]),
        # The head owns no embeddings, whatever the layer config (often the verifier's own) says.
        tie_word_embeddings=False,
    )
    return normalised


def _layer_fields(layer_config: dict[str, Any]) -> dict[str, Any]:
    """The decoder fields of `transformer_layer_config`."""
    model_type = layer_config.get("model_type", "qwen3")
    if model_type not in LAYER_CONFIG_MODEL_TYPES:
        raise ValueError(f"transformer_layer_config.model_type is {model_type!r}: a JetSpec head is a stack of "
                         f"Qwen3-style layers, declared as one of {LAYER_CONFIG_MODEL_TYPES}.")
    return {key: value for key, value in layer_config.items() if key not in _LAYER_METADATA_KEYS}


def _speculators_causality(layers: dict[str, Any], sliding_window_non_causal: bool) -> bool:
    """Whether speculators runs the head's block causally: full-attention layers never are, sliding-window layers
    unless `sliding_window_non_causal`. A JetSpec head has one mask for all its layers."""
    from transformers import Qwen3Config

    # Built as speculators builds it, so that defaults (layer_types from max_window_layers, a window dropped when
    # use_sliding_window is off) resolve the same way.
    resolved = Qwen3Config(**{key: value for key, value in layers.items() if key in Qwen3Config().to_dict()})
    kinds = resolved.layer_types or ["full_attention"] * resolved.num_hidden_layers
    if "sliding_attention" in kinds and resolved.sliding_window is None:
        raise ValueError("transformer_layer_config declares sliding_attention layers without a window in effect "
                         "(use_sliding_window is off): speculators runs them as bidirectional full attention and "
                         "this package as windowed ones. Set use_sliding_window and sliding_window, or declare "
                         "the layers full_attention.")
    causal = {kind == "sliding_attention" and not sliding_window_non_causal for kind in kinds}
    if len(causal) > 1:
        raise ValueError("sliding_window_non_causal is false and transformer_layer_config.layer_types mixes "
                         "full_attention and sliding_attention layers: speculators runs the full layers "
                         "bidirectionally and the sliding ones causally, and a JetSpec head has one block mask.")
    return causal.pop()


def _tree_depth(speculators_config: dict[str, Any], block_size: int) -> int | None:
    """The head's default tree depth from its greedy proposal's `speculative_tokens` (`None`: the whole block)."""
    methods = speculators_config.get("proposal_methods") or []
    if not methods:
        return None
    default = speculators_config.get("default_proposal_method", "greedy")
    chosen = [method for method in methods if method.get("proposal_type") == default]
    if default != "greedy" or not chosen:
        raise ValueError(f"speculators_config.default_proposal_method is {default!r}: only the greedy proposal (one "
                         "chain, verified exactly) has a JetSpec meaning.")
    method = chosen[0]
    if method.get("verifier_accept_k", 1) != 1 or method.get("accept_tolerance", 0.0) != 0.0:
        raise ValueError("speculators_config.proposal_methods asks for verifier_accept_k > 1 / accept_tolerance > 0 "
                         "(accepting tokens the target did not choose); JetSpec verification is exact. Set them to "
                         "1 and 0.0.")
    tokens = method.get("speculative_tokens", block_size - 1)
    if not isinstance(tokens, int) or not 1 <= tokens <= block_size - 1:
        raise ValueError(f"speculators_config.proposal_methods speculative_tokens is {tokens!r}: a block of "
                         f"{block_size} drafts 1..{block_size - 1} tokens after its anchor.")
    return None if tokens == block_size - 1 else tokens


# --- config.json, written ------------------------------------------------------------------------------------------

def speculators_config_dict(config, target_config, dtype, verifier_name: str | None,
                            speculative_tokens: int) -> dict[str, Any]:
    """The config.json of a head in speculators' layout.

    Args:
        config: the head's `JetSpecConfig` (already checked to fit `target_config`).
        target_config: the config of the target the head was trained for.
        dtype: the dtype its weights are saved in.
        verifier_name: the target's Hub id or folder (speculators reloads the embeddings from it), or `None`.
        speculative_tokens: how many tokens a round drafts by default (the head's tree depth).
    """
    import transformers

    text_config = target_config.get_text_config() if hasattr(target_config, "get_text_config") else target_config
    declared = {"dflash_config.target_layer_ids": config.dflash_config.get("target_layer_ids"),
                "dflash_config.mask_token_id": config.mask_token_id}
    missing = [name for name, value in declared.items() if value is None]
    if missing:
        raise ValueError(f"The speculators layout needs {', '.join(missing)}, which this head's config does not set: "
                         "set them on `head.config` before exporting.")
    layers = {field: getattr(config, field) for field in RELEASED_DECODER_FIELDS}
    layers.update({field: getattr(config, field) for field in RELEASED_TOKEN_ID_FIELDS})
    layers.update(model_type="qwen3", tie_word_embeddings=False,
                  rope_parameters=dict(config.rope_parameters or {"rope_type": "default", "rope_theta": 10000.0}),
                  # speculators' Qwen3Config drops the window unless this is set.
                  use_sliding_window=any(window is not None for window in config.layer_windows))
    return {
        "architectures": [SPECULATORS_ARCHITECTURE],
        "aux_hidden_state_layer_ids": [index + 1 for index in config.target_layer_ids],
        "block_size": config.block_size,
        "draft_vocab_size": config.draft_vocab_size or config.vocab_size,
        "dtype": str(dtype).removeprefix("torch."),
        "mask_token_id": config.mask_token_id,
        # Not a speculators field (it keeps unknown keys): the target's depth, for the fit check on load here.
        "num_target_layers": text_config.num_hidden_layers,
        "sample_from_anchor": False,
        # Sliding layers keep the head's mask; full-attention layers are bidirectional whatever is written.
        "sliding_window_non_causal": not config.causal_head,
        "speculators_config": {
            "algorithm": SPECULATORS_MODEL_TYPE,
            "default_proposal_method": "greedy",
            "proposal_methods": [{"accept_tolerance": 0.0, "proposal_type": "greedy",
                                  "speculative_tokens": speculative_tokens, "verifier_accept_k": 1}],
            "verifier": {"architectures": list(getattr(target_config, "architectures", None) or []),
                         "name_or_path": verifier_name},
        },
        "speculators_model_type": SPECULATORS_MODEL_TYPE,
        "speculators_version": SPECULATORS_LAYOUT_VERSION,
        "target_hidden_size": None,
        "tie_word_embeddings": False,
        "transformer_layer_config": dict(sorted(layers.items())),
        "transformers_version": transformers.__version__,
    }


def export_notes(config, num_target_layers: int) -> list[tuple[str, bool]]:
    """What changes when speculators (and vLLM, reading this layout) run the head: `(message, is_warning)`."""
    windows = config.layer_windows
    notes = []
    if num_target_layers - 1 in config.target_layer_ids:
        # The index is written as it is (it is what the head reads: the last layer's raw output), and speculators'
        # classes load it; but its data pipeline always adds that hidden state and splits it off as the verifier's
        # own output, and its converter drops it from aux_hidden_state_layer_ids.
        notes.append((f"the head taps the target's last layer (aux_hidden_state_layer_ids has {num_target_layers}), "
                      "which speculators' trainer and converter treat as the verifier's own output rather than an "
                      "input of the head: its classes load the folder, but fine-tuning it with speculators would "
                      "feed fc one layer fewer; check that the serving engine captures that layer", True))
    if config.causal_head and any(window is None for window in windows):
        mixed = any(window is not None for window in windows)
        notes.append(("the speculators layout makes every full-attention layer attend BIDIRECTIONALLY inside the "
                      "block, but this head was trained with a causal mask: its drafts there will be accepted less "
                      "often than here" + (", and this package refuses to load the folder back (its sliding layers "
                      "stay causal: two masks in one head)" if mixed else ", and it loads back here bidirectional")
                      + ". Export it in the released format for vLLM (it keeps the mask), or train a bidirectional "
                      "(--bidirectional) head for this layout", True))
    if any(window is not None for window in windows):
        notes.append(("speculators measures a sliding window from the block's anchor in training, this package and "
                      "vLLM from each block row: the context they see differs by up to block_size positions at the "
                      "window's far end", False))
    return notes



__all__ = [
    "LAYER_CONFIG_MODEL_TYPES", "SPECULATORS_ARCHITECTURE", "SPECULATORS_DEFAULTS", "SPECULATORS_LAYOUT_VERSION",
    "SPECULATORS_MODEL_TYPE", "export_notes", "is_speculators_config", "jetspec_config_dict", "speculators_config_dict",
]
