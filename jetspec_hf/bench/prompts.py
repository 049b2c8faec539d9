"""Prompt sets for the benchmark, turned into token ids once, up front.

Reading is `jetspec_hf.prompts`, shared with the training recipe (same sources, same prompt fields); this module
keeps the benchmark's defaults (the `test` split, the first `--samples` prompts) and its tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..prompts import PROMPT_FIELDS, encode_prompt, read_dataset_prompts, read_jsonl_prompts
from ..prompts import load_prompts as load_prompt_sources

# Field names tried, in order, when `--field` is not given.
DEFAULT_FIELDS = PROMPT_FIELDS


def load_jsonl_prompts(path: Path, field: str | None = None, samples: int | None = None) -> list[str]:
    """Prompts from a JSONL file, one JSON object a line (blank lines skipped)."""
    return read_jsonl_prompts(path, field, samples)


def load_dataset_prompts(
    name: str, split: str = "test", field: str | None = None, samples: int | None = None
) -> list[str]:
    """Prompts from a `datasets` dataset: a folder written by `save_to_disk`, or anything `load_dataset` takes."""
    return read_dataset_prompts(name, field, split, samples)


def load_prompts(source: str, split: str = "test", field: str | None = None, samples: int | None = None) -> list[str]:
    """Prompts from `source`: a `.jsonl` file, else a `datasets` name or saved dataset folder."""
    return load_prompt_sources(source, field=field, split=split, limit=samples)


def encode_prompts(tokenizer, prompts: list[str], chat_template: bool, device) -> list[torch.Tensor]:
    """Token ids `(1, L)` per prompt, on `device`; with `chat_template`, each prompt becomes one user turn."""
    encoded = []
    for text in prompts:
        # The tokenizer's special tokens are added as a plain `tokenizer(text)` call would (Qwen3's add none).
        ids = encode_prompt(tokenizer, text, chat_template, add_special_tokens=True)
        if not ids:
            raise ValueError(f"Prompt {text[:40]!r} encodes to no tokens.")
        encoded.append(torch.tensor([ids], dtype=torch.long, device=device))
    return encoded


__all__ = ["DEFAULT_FIELDS", "encode_prompts", "load_dataset_prompts", "load_jsonl_prompts", "load_prompts"]
