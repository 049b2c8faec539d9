"""Prompt sets for the benchmark: a JSONL file or a `datasets` dataset, turned into token ids once, up front."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Field names tried, in order, when `--field` is not given. They cover the usual benchmark sets: HumanEval
# (`prompt`), GSM8K (`question`), MATH-500 (`problem`), MT-Bench (`turns`, a list: its first turn is used).
DEFAULT_FIELDS = ("prompt", "text", "question", "problem", "instruction", "turns")


def _pick_text(record: dict, field: str | None, where: str) -> str:
    """The prompt text of one record: `field` if given, else the first of `DEFAULT_FIELDS` it has."""
    names = (field,) if field else DEFAULT_FIELDS
    for name in names:
        if name in record and record[name] is not None:
            value = record[name]
            # Multi-turn sets store a list of user turns; the first one is a complete prompt by itself.
            if isinstance(value, (list, tuple)):
                if not value:
                    continue
                value = value[0]
            if not isinstance(value, str):
                raise ValueError(f"{where}: field {name!r} holds a {type(value).__name__}, not text.")
            return value
    wanted = repr(field) if field else "any of " + ", ".join(DEFAULT_FIELDS)
    raise ValueError(f"{where}: no prompt field ({wanted}); fields present: {sorted(record)}. Pass --field.")


def load_jsonl_prompts(path: Path, field: str | None = None, samples: int | None = None) -> list[str]:
    """Prompts from a JSONL file, one JSON object a line (blank lines skipped)."""
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            prompts.append(_pick_text(json.loads(line), field, f"{path}:{line_number}"))
            if samples is not None and len(prompts) >= samples:
                break
    return prompts


def load_dataset_prompts(
    name: str, split: str = "test", field: str | None = None, samples: int | None = None
) -> list[str]:
    """Prompts from a `datasets` dataset: a folder written by `save_to_disk`, or anything `load_dataset` takes.

    No network access is attempted beyond what `datasets` itself does; set `HF_DATASETS_OFFLINE=1` to use the
    local cache only.
    """
    import datasets  # imported here: only this prompt source needs it

    path = Path(name)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        dataset = datasets.load_from_disk(str(path))
    else:
        dataset = datasets.load_dataset(name, split=split)
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"Dataset {name!r} has splits {list(dataset)}, not {split!r}: pass --split.")
        dataset = dataset[split]
    count = len(dataset) if samples is None else min(samples, len(dataset))
    return [_pick_text(dataset[index], field, f"{name}[{index}]") for index in range(count)]


def load_prompts(source: str, split: str = "test", field: str | None = None, samples: int | None = None) -> list[str]:
    """Prompts from `source`: a `.jsonl` file, else a `datasets` name or saved dataset folder."""
    path = Path(source)
    if path.is_file() and path.suffix in {".jsonl", ".json"}:
        prompts = load_jsonl_prompts(path, field, samples)
    elif path.suffix in {".jsonl", ".json"}:
        raise FileNotFoundError(f"Prompt file {source!r} does not exist.")
    else:
        prompts = load_dataset_prompts(source, split, field, samples)
    if not prompts:
        raise ValueError(f"No prompts found in {source!r}.")
    return prompts


def encode_prompts(tokenizer, prompts: list[str], chat_template: bool, device) -> list[torch.Tensor]:
    """Token ids `(1, L)` per prompt, on `device`; with `chat_template`, each prompt becomes one user turn."""
    encoded = []
    for text in prompts:
        if chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("--chat-template was given, but the tokenizer has no chat template.")
            # Thinking off, as the heads' training data was generated (the Qwen3 template reads this flag; others
            # ignore unknown template variables).
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}],
                add_generation_prompt=True,
                enable_thinking=False,
                tokenize=True,
                return_dict=False,
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            ids = torch.tensor([list(ids)], dtype=torch.long)
        else:
            ids = tokenizer(text, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise ValueError(f"Prompt {text[:40]!r} encodes to no tokens.")
        encoded.append(ids.to(device))
    return encoded


__all__ = ["DEFAULT_FIELDS", "encode_prompts", "load_dataset_prompts", "load_jsonl_prompts", "load_prompts"]
