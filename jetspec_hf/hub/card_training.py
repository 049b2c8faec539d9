"""The training section of a model card, from a training record: the head trainer's `training_args.json`, or the
`training_summary.json` that the bundled LM scripts write."""

from __future__ import annotations

from collections.abc import Mapping

from .card_facts import table_cell

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
    return table_cell(str(value) if isinstance(value, float) else value)


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
        rows.append(("sequences per step", table_cell(args["batch_size"])))
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


__all__ = ["summarize_training"]
