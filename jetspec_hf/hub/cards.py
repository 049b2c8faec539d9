"""Model cards for draft heads (and plain causal LMs), rendered from the Jinja templates in `hub_cards/`.

Everything a card states is computed here from the saved config, the weight files, the trainer's
`training_args.json` and a bench JSON; the templates only lay it out. Missing inputs leave their section with a
short note instead of failing, since a card is often rendered before every number exists.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..configuration_jetspec import JetSpecConfig
from ..extras import require_extra
from .files import TRAINING_RECORD_FILES

# Templates live at the top of the source tree (`hub_cards/`), next to the package; a wheel install puts them
# under `<prefix>/share/jetspec_hf/hub_cards` (pyproject's data-files).
TEMPLATE_DIRS = (
    Path(__file__).resolve().parents[2] / "hub_cards",
    Path(sys.prefix) / "share" / "jetspec_hf" / "hub_cards",
)
HEAD_TEMPLATE = "draft_head.md.j2"
CAUSAL_LM_TEMPLATE = "causal_lm.md.j2"


HEAD_TAGS = ("speculative-decoding", "jetspec", "draft-head", "qwen3")
# Hub convention for repositories that ship `custom_generate/generate.py`.
CUSTOM_GENERATE_TAG = "custom_generate"

# The Markdown shown where a value is unknown.
MISSING = "–"


def require_card_extras() -> None:
    """Cards are Jinja templates: check for jinja2 (the `hub` extra) before anything is rendered or written."""
    require_extra("hub", "jinja2", purpose="Rendering a model card")


def template_path(name: str) -> Path:
    """Path of a card template in `hub_cards/`; a clear error when the source tree is not at hand."""
    for folder in TEMPLATE_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Model-card template {name!r} not found in {', '.join(map(str, TEMPLATE_DIRS))}. The templates ship with "
        "jetspec_hf (`hub_cards/`); pass `template_path=` to use another copy."
    )


# ----------------------------------------------------------------------------------------------------- formatting


def format_count(count: int | None) -> str:
    """`1234567` -> `"1.23M"`: parameter counts as cards usually print them."""
    if count is None:
        return MISSING
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def _cell(value: Any, digits: int = 2, suffix: str = "") -> str:
    """One Markdown table cell; `None` and absent values print as a dash, and `|` cannot break the row."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}".replace("|", "\\|").replace("\n", " ")


def _dtype_name(dtype: Any) -> str | None:
    if dtype is None:
        return None
    return str(dtype).removeprefix("torch.")


# ------------------------------------------------------------------------------------------------------- inputs


def find_training_record(folder: str | Path) -> Path | None:
    """The first training record (`TRAINING_RECORD_FILES`) present in `folder`, if any."""
    return next((Path(folder) / name for name in TRAINING_RECORD_FILES if (Path(folder) / name).is_file()), None)


def read_json(source: str | Path | Mapping | None) -> dict | None:
    """A JSON object from a path or an already parsed mapping; `None` stays `None`."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return dict(source)
    with open(source, encoding="utf-8") as file:
        data = json.load(file)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}.")
    return data


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
                shape = weights.get_slice(name).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def describe_head(config: JetSpecConfig, num_parameters: int | None = None) -> dict:
    """The facts of a head that its card states (kind, block size, tapped layers, size, tree defaults)."""
    causal = config.causal_head
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
        "dtype": _dtype_name(getattr(config, "dtype", None)) or MISSING,
        "tree_budget": config.tree_budget,
        "tree_width": config.tree_width,
        "tree_depth": config.tree_depth or config.block_size - 1,
    }


# (keys that may hold the setting, label on the card), in the card's order. The first names are those of the head
# trainer's `training_args.json` (`args`), the others those of a plain LM's `training_summary.json`.
_TRAINING_SETTINGS = (
    (("max_steps", "steps"), "optimizer steps"),
    (("learning_rate", "lr"), "peak learning rate"),
    (("min_lr_ratio",), "final / peak learning rate"),
    (("warmup_steps",), "warm-up steps"),
    (("warmup_ratio",), "warm-up fraction"),
    (("weight_decay",), "weight decay"),
    (("max_grad_norm",), "gradient clipping (norm)"),
    (("anchors_per_seq",), "anchor blocks per sequence"),
    (("ce_weight",), "cross-entropy weight (hard labels)"),
    (("kl_weight",), "KL weight (target's soft labels)"),
    (("kl_temperature",), "KL temperature"),
    (("depth_gamma",), "depth decay γ"),
    (("max_seq_len", "seq_len"), "max sequence length"),
    (("mixed_precision",), "mixed precision"),
    (("save_dtype",), "saved dtype"),
    (("seed",), "seed"),
)
# Outcomes and data sizes, read from the top level of the record.
_TRAINING_FACTS = (
    ("num_train_sequences", "training sequences"),
    ("num_eval_sequences", "held-out sequences"),
    ("train_tokens", "training tokens"),
    ("epochs", "epochs"),
    ("final_train_loss", "final training loss"),
    ("heldout_loss", "held-out loss"),
)


def _setting(value) -> str:
    # str() keeps a float as written (3e-4 prints as 0.0003, not rounded to a fixed number of digits).
    return _cell(str(value) if isinstance(value, float) else value)


def summarize_training(record: Mapping | None) -> dict | None:
    """Rows for the card's training section from a training record (`None` when there is none).

    The head trainer writes `training_args.json`: `{"args": {...}, "num_parameters", "num_train_sequences",
    "num_eval_sequences", "num_processes", ...}`. A flat mapping of settings is accepted too (e.g. a plain LM's
    `training_summary.json`: `steps`, `batch_size`, `lr`, `seq_len`, losses); unknown keys are not listed.
    """
    if not record:
        return None
    args = record.get("args") if isinstance(record.get("args"), Mapping) else record
    rows = []
    if args.get("per_device_batch_size") is not None:
        batch = args["per_device_batch_size"]
        accumulation = args.get("gradient_accumulation_steps") or 1
        processes = record.get("num_processes") or 1
        rows.append(("sequences per step", f"{batch * accumulation * processes} "
                                            f"({batch} per device × {accumulation} accumulation × {processes} "
                                            f"process{'es' if processes != 1 else ''})"))
    elif args.get("batch_size") is not None:
        rows.append(("sequences per step", _cell(args["batch_size"])))
    for keys, label in _TRAINING_SETTINGS:
        key = next((key for key in keys if key in args), None)
        if key is None:
            continue
        value = args[key]
        if key == "depth_gamma" and value is None:
            value = "none (uniform over depths)"
        if value is not None:
            rows.append((label, _setting(value)))
    if args.get("adam_beta1") is not None and args.get("adam_beta2") is not None:
        rows.append(("AdamW β", f"({args['adam_beta1']}, {args['adam_beta2']})"))
    for key, label in _TRAINING_FACTS:
        if record.get(key) is not None:
            value = record[key]
            rows.append((label, f"{value:.3g}" if key == "epochs" else _setting(value)))
    return {"rows": [{"setting": label, "value": value} for label, value in rows]}


def summarize_bench(bench: Mapping | None) -> dict | None:
    """Table rows and environment for the card's results section from a bench JSON (`None` when there is none).

    Expected shape (fields may be missing; they print as a dash): `{"environment": {"device", "dtype", "torch",
    "transformers", ...}, "target", "head", "prompts": {...}, "methods": [{"name", "kind", "tree_budget", "tau",
    "tokens_per_second", "speedup", "matches_plain", "skipped_reason"}]}`.
    """
    if not bench:
        return None
    environment = bench.get("environment") or {}
    hardware = environment.get("gpu") or environment.get("cpu")
    device = environment.get("device")
    setup = [
        ("hardware", f"{hardware} ({device})" if hardware and device else hardware or device),
        ("dtype", environment.get("dtype")),
        ("torch", environment.get("torch")),
        ("transformers", environment.get("transformers")),
        ("target", bench.get("target")),
        ("head", bench.get("head")),
    ]
    prompts = bench.get("prompts") or {}
    if prompts:
        described = [f"{prompts['samples']} prompts" if prompts.get("samples") is not None else None,
                     f"from {prompts['source']}" if prompts.get("source") else None,
                     f"{prompts['max_new_tokens']} new tokens each" if prompts.get("max_new_tokens") else None]
        setup.append(("prompts", ", ".join(part for part in described if part) or None))
    rows = []
    for method in bench.get("methods") or []:
        skipped = method.get("skipped_reason")
        rows.append(
            {
                "name": _cell(method.get("name")),
                "kind": _cell(method.get("kind")),
                "tree_budget": _cell(method.get("tree_budget")),
                "tau": _cell(method.get("tau")),
                "tokens_per_second": _cell(method.get("tokens_per_second"), digits=1),
                "speedup": _cell(method.get("speedup"), suffix="×"),
                "matches_plain": _cell(method.get("matches_plain")),
                "skipped": _cell(str(skipped).strip().splitlines()[0]) if skipped else None,
            }
        )
    return {
        "setup": [{"name": name, "value": _cell(value)} for name, value in setup if value is not None],
        "rows": rows,
        "any_mismatch": any(method.get("matches_plain") is False for method in bench.get("methods") or []),
    }


# ------------------------------------------------------------------------------------------------------ cards


def head_card_data(
    config: JetSpecConfig,
    *,
    base_model: str,
    license: str = "apache-2.0",
    custom_generate: bool = True,
    datasets: list[str] | None = None,
    language: str | list[str] | None = None,
    extra_tags: list[str] | None = None,
) -> ModelCardData:
    """The YAML metadata of a head's card."""
    tags = list(HEAD_TAGS)
    if not config.causal_head:
        tags.append("dflash")
    if custom_generate:
        tags.append(CUSTOM_GENERATE_TAG)
    tags += [tag for tag in extra_tags or [] if tag not in tags]
    return ModelCardData(
        library_name="transformers",
        base_model=base_model,
        pipeline_tag="text-generation",
        license=license,
        tags=tags,
        datasets=datasets,
        language=language,
    )


def render_head_card(
    config: JetSpecConfig,
    *,
    base_model: str,
    num_parameters: int | None = None,
    bench: str | Path | Mapping | None = None,
    training_args: str | Path | Mapping | None = None,
    training_data: str | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    custom_generate: bool = True,
    datasets: list[str] | None = None,
    language: str | list[str] | None = None,
    extra_tags: list[str] | None = None,
    template: str | Path | None = None,
) -> ModelCard:
    """Render the card of a draft head.

    Args:
        config: the head's config.
        base_model: repo id of the target the head drafts for (card metadata `base_model`).
        num_parameters: the head's parameter count (see `count_safetensors_parameters`).
        bench: bench JSON (path or parsed) for the results table; `None` renders a placeholder note.
        training_args: the trainer's `training_args.json` (path or parsed), if any.
        training_data: free text describing the training data (the trainer does not record it).
        repo_id: the head's repository, used in the usage snippets (a placeholder when unknown).
        model_name: the card's title (default: the repo name).
        license: SPDX-style license id for the metadata.
        custom_generate: whether the repository ships `custom_generate/` (adds the no-install snippet and tag).
        datasets, language, extra_tags: more metadata.
        template: another template file instead of `hub_cards/draft_head.md.j2`.
    """
    require_card_extras()
    card_data = head_card_data(
        config, base_model=base_model, license=license, custom_generate=custom_generate, datasets=datasets,
        language=language, extra_tags=extra_tags,
    )
    head = describe_head(config, num_parameters)
    repo = repo_id or "path/to/this/head"
    return ModelCard.from_template(
        card_data,
        template_path=str(template or template_path(HEAD_TEMPLATE)),
        model_name=model_name or (repo_id.split("/")[-1] if repo_id else f"{head['kind_name'].split()[0]} draft head"),
        repo_id=repo,
        repo_id_known=repo_id is not None,
        base_model=base_model,
        head=head,
        custom_generate=custom_generate,
        training=summarize_training(read_json(training_args)),
        training_data=training_data,
        results=summarize_bench(read_json(bench)),
        max_new_tokens=256,
    )


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
        "dtype": _dtype_name(getattr(config, "dtype", None)) or MISSING,
    }


def render_causal_lm_card(
    config,
    *,
    num_parameters: int | None = None,
    role: str | None = None,
    description: str | None = None,
    training_args: str | Path | Mapping | None = None,
    training_data: str | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    language: str | list[str] | None = None,
    extra_tags: list[str] | None = None,
    template: str | Path | None = None,
) -> ModelCard:
    """Render the card of a plain causal LM (e.g. a small target, or a draft LM for stock assisted decoding).

    Args:
        config: the model's config.
        role: what the model is for, in a few words (e.g. "target" or "draft LM for assisted decoding").
        description: free text shown under the title.
        The other arguments mean what they mean for `render_head_card`.
    """
    require_card_extras()
    tags = [tag for tag in [getattr(config, "model_type", None), *(extra_tags or [])] if tag]
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        pipeline_tag="text-generation",
        license=license,
        tags=list(dict.fromkeys(tags)) or None,
        datasets=datasets,
        language=language,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template or template_path(CAUSAL_LM_TEMPLATE)),
        model_name=model_name or (repo_id.split("/")[-1] if repo_id else "Causal language model"),
        repo_id=repo_id or "path/to/this/model",
        role=role,
        description=description,
        model=describe_causal_lm(config, num_parameters),
        training=summarize_training(read_json(training_args)),
        training_data=training_data,
    )


__all__ = [
    "count_safetensors_parameters",
    "describe_causal_lm",
    "describe_head",
    "find_training_record",
    "format_count",
    "head_card_data",
    "read_json",
    "render_causal_lm_card",
    "render_head_card",
    "summarize_bench",
    "summarize_training",
    "template_path",
]
