"""The weights of a head in the DFlash layout of vLLM's `speculators` library (see `speculators_format.py`): the
draft vocabulary as `d2t` / `t2d`, the target's lm_head rows beside it, and loading such a folder as a JetSpec head.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from .log import get_logger
from .released_format import hub_arguments
from .speculators_format import speculators_config_dict

logger = get_logger(__name__)

# Tensors copied from the target (the head borrows the target's own at run time) and the vocabulary mapping.
BORROWED_KEYS = ("embed_tokens.weight", "lm_head.weight", "verifier_lm_head.weight", "verifier_norm.weight")
VOCAB_MAPPING_KEYS = ("d2t", "t2d")


def vocab_mapping(vocab_ids: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(d2t, t2d, ids)` for a draft vocabulary: draft index i is the i-th smallest draft token id (the order of
    speculators' lm_head rows, which it takes from the target's lm_head through `t2d`)."""
    ids = torch.sort(vocab_ids.detach().to("cpu", torch.long)).values
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[ids] = True
    return ids - torch.arange(len(ids)), t2d, ids


def vocab_ids_from_mapping(d2t: torch.Tensor, t2d: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The draft vocabulary (target token ids) that `d2t` and `t2d` describe; they must agree."""
    ids = torch.arange(len(d2t)) + d2t.to("cpu", torch.long)
    t2d = t2d.to("cpu", torch.bool)
    if len(t2d) != vocab_size or ids.min() < 0 or ids.max() >= vocab_size or not torch.equal(
            torch.sort(ids).values, t2d.nonzero().flatten()) or not torch.equal(torch.sort(ids).values, ids):
        raise ValueError(f"d2t and t2d do not describe the same draft vocabulary of a {vocab_size}-token target "
                         "(d2t[i] + i must be the ids t2d marks, in increasing order): the folder is damaged.")
    return ids


def speculators_state_dict(state_dict: dict[str, torch.Tensor], vocab_ids: torch.Tensor | None,
                           target) -> dict[str, torch.Tensor]:
    """The weights of a head in speculators' layout: the body under its own names, and with a draft vocabulary the
    mapping and the target's lm_head rows at it (in the body's dtype)."""
    written = {key: value for key, value in state_dict.items() if key != "draft_vocab_ids"}
    if vocab_ids is None:
        return written
    lm_head = target.get_output_embeddings().weight
    d2t, t2d, ids = vocab_mapping(vocab_ids, lm_head.shape[0])
    dtype = next(value.dtype for value in written.values() if value.is_floating_point())
    written.update(d2t=d2t, t2d=t2d, **{"lm_head.weight": lm_head.detach()[ids.to(lm_head.device)].to("cpu", dtype)})
    return written


def split_state_dict(state_dict: dict[str, torch.Tensor], vocab_size: int) -> tuple[dict, torch.Tensor | None, dict]:
    """`(body, draft vocabulary or None, copies of target tensors)` from a speculators state dict."""
    body = {key: value for key, value in state_dict.items() if key not in (*BORROWED_KEYS, *VOCAB_MAPPING_KEYS)}
    borrowed = {key: state_dict[key] for key in BORROWED_KEYS if key in state_dict}
    vocab_ids = None
    if "d2t" in state_dict or "t2d" in state_dict:
        if not ("d2t" in state_dict and "t2d" in state_dict):
            raise ValueError("The folder stores only one of d2t and t2d: both describe its draft vocabulary.")
        vocab_ids = vocab_ids_from_mapping(state_dict["d2t"], state_dict["t2d"], vocab_size)
        body["draft_vocab_ids"] = vocab_ids
    return body, vocab_ids, borrowed


def borrowed_rows_problems(borrowed: dict[str, torch.Tensor], vocab_ids: torch.Tensor | None,
                           embed: torch.Tensor, lm_head: torch.Tensor) -> list[str]:
    """Where the folder's copies of target tensors differ from the target's own `embed` / `lm_head` weights (equal
    up to the rounding of the lower of the two precisions)."""
    rows = lm_head if vocab_ids is None else lm_head[vocab_ids.to(lm_head.device)]
    expected = {"embed_tokens.weight": embed, "lm_head.weight": rows}
    problems = []
    for key, target_rows in expected.items():
        stored = borrowed.get(key)
        if stored is None:
            continue
        if stored.shape != target_rows.shape:
            problems.append(f"{key} has shape {tuple(stored.shape)}, the target's rows {tuple(target_rows.shape)}")
        elif not torch.allclose(stored.float(), target_rows.detach().to("cpu").float(), rtol=1e-2, atol=1e-5):
            problems.append(f"{key} differs from the target's rows")
    return problems


def check_against_verifier(name_or_path, config_dict: dict[str, Any], borrowed: dict, vocab_ids) -> None:
    """Refuse a folder whose copies of target tensors are not its verifier's own.

    A JetSpec head owns no embeddings and no lm_head: it drafts with the target's at run time, so the stored copies
    are dropped. speculators never trains them (they are frozen and refilled from the verifier when it loads a
    folder), so a difference means the folder was made for another target or edited, and the head would draft with
    weights it was not trained with: an error says so instead. Only files already on this machine are read (a
    check never downloads a target); without them it is skipped, with a warning.
    """
    if not borrowed:
        return
    verifier = ((config_dict.get("speculators_config") or {}).get("verifier") or {}).get("name_or_path")
    rows = _verifier_rows(verifier) if verifier else None
    if rows is None:
        logger.warning("%s stores copies of its verifier's %s but the verifier %r is not on this machine, so they "
                       "were not compared with it: the head drafts with the embeddings and lm_head of the target it is "
                       "given.", name_or_path, ", ".join(sorted(borrowed)), verifier)
        return
    problems = borrowed_rows_problems(borrowed, vocab_ids, *rows)
    if problems:
        raise ValueError(f"{name_or_path} was not made for its verifier {verifier}: " + "; ".join(problems) + ". A "
                         "JetSpec head drafts with its target's own embeddings and lm_head, so it would run with "
                         "weights it was not trained with. Export the head again from the target it was trained on.")


def _weight_files(name_or_path, hub: dict) -> list[str] | None:
    """The safetensors files of a folder or Hub repo (one file or an index's shards); `None` when it has none."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

    found = dict(_raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    single = cached_file(name_or_path, SAFE_WEIGHTS_NAME, **found, **hub)
    if single:
        return [single]
    index = cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, **found, **hub)
    if not index:
        return None
    with open(index, encoding="utf-8") as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    files = [cached_file(name_or_path, shard, **found, **hub) for shard in shards]
    return files if all(files) else None


def read_state_dict(name_or_path, load_kwargs: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a head folder's safetensors files."""
    from safetensors.torch import load_file

    files = _weight_files(name_or_path, hub_arguments(load_kwargs))
    if files is None:
        raise OSError(f"{name_or_path} has no model.safetensors (nor an index of shards): a speculators head folder "
                      "keeps its weights there.")
    state_dict = {}
    for path in files:
        state_dict.update(load_file(path))
    return state_dict


def _verifier_rows(name_or_path: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`(embeddings, lm_head)` weights of a target from files on this machine, or `None` when they are not here."""
    from safetensors import safe_open

    try:
        files = _weight_files(name_or_path, {"local_files_only": True})
    except (OSError, ValueError):
        return None
    keys = {}
    for path in files or []:
        with safe_open(path, framework="pt") as weights:
            keys.update(dict.fromkeys(weights.keys(), path))
    # The shortest key with the name's ending (`model.embed_tokens.weight`, `lm_head.weight`), as speculators picks.
    found = {}
    for name in ("embed_tokens.weight", "lm_head.weight"):
        matches = sorted((key for key in keys if key == name or key.endswith("." + name)), key=len)
        if matches:
            with safe_open(keys[matches[0]], framework="pt") as weights:
                found[name] = weights.get_tensor(matches[0])
    if "embed_tokens.weight" not in found:
        return None
    # A target with tied embeddings stores no lm_head.
    return found["embed_tokens.weight"], found.get("lm_head.weight", found["embed_tokens.weight"])


def speculators_layout(head, target) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`(config.json, state dict)` of `head` in speculators' layout, for the `target` it was trained for."""
    from .compatibility import head_fit_problems

    if target is None:
        raise ValueError("checkpoint_format='speculators' stores the target's lm_head rows of the draft vocabulary "
                         "and names the target as the verifier: pass `target=` (the model the head was trained for).")
    problems = head_fit_problems(head.config, target.config)
    if problems:
        raise ValueError("The head does not fit this target: " + "; ".join(problems) + ".")
    config = head.config
    depth = getattr(head.generation_config, "tree_depth", None)
    tokens = min(depth, config.max_tree_depth) if isinstance(depth, int) and depth >= 1 else config.max_tree_depth
    written = speculators_config_dict(config, target.config, head.dtype, target.name_or_path or None, tokens)
    # A draft vocabulary of the whole target vocabulary is none: speculators stores no mapping then.
    draft_ids = head.draft_vocab_ids if config.draft_vocab_size not in (None, config.vocab_size) else None
    return written, speculators_state_dict(head.state_dict(), draft_ids, target)


def folder_config_dict(name_or_path, load_kwargs: dict) -> dict[str, Any] | None:
    """The config.json of a folder or Hub repo, or `None` when it cannot be read (loading then says why)."""
    from transformers import PreTrainedConfig

    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(name_or_path, **hub_arguments(load_kwargs))
    except (OSError, ValueError):
        return None
    return config_dict


def load_arguments(name_or_path, config_dict: dict[str, Any], load_kwargs: dict) -> dict:
    """The `PreTrainedModel.from_pretrained` arguments (with no folder) that load a speculators folder as a
    JetSpec head: its config normalised, and its weights with the draft vocabulary as `draft_vocab_ids` and the
    copies of target tensors left out (checked against the verifier first)."""
    from .configuration_jetspec import JetSpecConfig

    hub = hub_arguments(load_kwargs)
    config = load_kwargs.get("config") or JetSpecConfig.from_pretrained(name_or_path, **hub)
    body, vocab_ids, borrowed = split_state_dict(read_state_dict(name_or_path, load_kwargs), config.vocab_size)
    stored = None if vocab_ids is None else len(vocab_ids)
    if stored != config.draft_vocab_size:
        # speculators reads a missing draft_vocab_size as 32000: a folder can declare one it does not store.
        raise ValueError(f"{name_or_path} declares draft_vocab_size {config_dict.get('draft_vocab_size')} for a "
                         f"{config.vocab_size}-token target but its weights hold "
                         + ("no d2t / t2d" if stored is None else f"a mapping of {stored} tokens")
                         + ": set draft_vocab_size in config.json to what the weights hold.")
    check_against_verifier(name_or_path, config_dict, borrowed, vocab_ids)
    arguments = {key: value for key, value in load_kwargs.items() if key not in hub and key != "config"}
    return dict(arguments, config=config, state_dict=body)


__all__ = [
    "BORROWED_KEYS", "VOCAB_MAPPING_KEYS", "borrowed_rows_problems", "check_against_verifier", "folder_config_dict",
    "load_arguments", "read_state_dict", "speculators_layout", "speculators_state_dict", "split_state_dict",
    "vocab_ids_from_mapping", "vocab_mapping",
]
