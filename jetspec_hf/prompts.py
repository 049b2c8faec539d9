"""Prompt sets, read the same way by the training recipe (`jetspec-hf train generate-data`) and the benchmark
(`jetspec-hf bench`), and turned into token ids the same way.

A source is a JSON Lines file (one object a line), a folder written by `datasets`' `save_to_disk`, a name that
`datasets.load_dataset` knows, or a plain text file cut into token windows. The prompt of a record is its `field`,
or else the first of `PROMPT_FIELDS` it has.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .extras import require_extra

# Field names tried in order when no field is named. They cover the usual prompt sets: HumanEval (`prompt`), GSM8K
# (`question`), MATH-500 (`problem`), instruction sets (`instruction`), chat exports (`content`), MT-Bench (`turns`,
# a list of user turns: the first is used).
PROMPT_FIELDS = ("prompt", "text", "question", "problem", "instruction", "content", "turns")
JSON_SUFFIXES = (".jsonl", ".json")


def prompt_text(record: dict, field: str | None, where: str) -> str:
    """The prompt of one record: `field` if given, else the first of `PROMPT_FIELDS` it has."""
    for name in (field,) if field else PROMPT_FIELDS:
        value = record.get(name)
        # Multi-turn sets store a list of user turns; the first one is a complete prompt by itself.
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{where}: field {name!r} holds a {type(value).__name__}, not text.")
        return value
    wanted = repr(field) if field else "any of " + ", ".join(PROMPT_FIELDS)
    raise ValueError(f"{where}: no prompt field ({wanted}); fields present: {sorted(record)}. Pass --field.")


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict)."""
    path = Path(path)
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    return path.is_dir() and any((path / marker).is_file() for marker in markers)


def needs_datasets(source: str | os.PathLike) -> bool:
    """Whether reading `source` takes the `datasets` package: anything but a JSON Lines, JSON array or plain text
    file, or the packaged `sharegpt` conversations."""
    from .conversations import SHAREGPT_NAME

    path = Path(source)
    return str(source) != SHAREGPT_NAME and path.suffix not in JSON_SUFFIXES and not path.is_file()


def read_jsonl_prompts(path: str | os.PathLike, field: str | None = None, limit: int | None = None) -> list[str]:
    """The prompts of a JSON Lines file, one object a line (blank lines skipped), at most `limit` of them."""
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number} is not valid JSON: {error}") from error
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number} is not a JSON object.")
            prompts.append(prompt_text(record, field, f"{path}:{line_number}"))
            if limit is not None and len(prompts) >= limit:
                break
    return prompts


def read_dataset_prompts(
    name: str | os.PathLike, field: str | None = None, split: str | None = None, limit: int | None = None
) -> list[str]:
    """The prompts of a `datasets` dataset: a `save_to_disk` folder, or a name `load_dataset` takes.

    `split` picks a split of a dataset with several; without it, `train` or the only split is used. No network
    access is attempted beyond what `datasets` itself does (`HF_DATASETS_OFFLINE=1` keeps it to the local cache).
    """
    require_extra("train", "datasets", purpose=f"Reading prompts from the dataset {str(name)!r}")
    import datasets

    if is_saved_dataset(name):
        dataset = datasets.load_from_disk(str(name))
    else:
        dataset = datasets.load_dataset(str(name), split=split)
    if isinstance(dataset, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in dataset else next(iter(dataset))
        if split not in dataset:
            raise ValueError(f"Dataset {str(name)!r} has splits {list(dataset)}, not {split!r}: pass --split.")
        dataset = dataset[split]
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return [prompt_text(dataset[index], field, f"{name}[{index}]") for index in range(count)]


def text_windows(
    text: str, tokenizer, window_tokens: int, stride: int | None = None, max_windows: int | None = None
) -> list[str]:
    """Cut `text` into prompts of `window_tokens` tokens, one every `stride` tokens (default: no overlap).

    Windows are decoded back to text so that every prompt source yields strings; a tail shorter than half a window
    is dropped because it says too little to continue from.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stride = stride or window_tokens
    windows = []
    for start in range(0, max(1, len(ids) - window_tokens // 2), stride):
        piece = ids[start : start + window_tokens]
        if len(piece) < max(1, window_tokens // 2):
            break
        windows.append(tokenizer.decode(piece))
        if max_windows is not None and len(windows) >= max_windows:
            break
    return windows


def load_prompts(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    field: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    tokenizer=None,
    window_tokens: int = 64,
    window_stride: int | None = None,
) -> list[str]:
    """The prompts of one or several sources, in order, at most `limit` in all.

    Args:
        sources: JSON Lines files, `save_to_disk` folders, `datasets` names, plain text files, or conversation
            exports (a JSON array of ShareGPT records, or `sharegpt` for the packaged one: first user turns).
        field: the record field holding the prompt (default: the first of `PROMPT_FIELDS` present).
        split: the split of a `datasets` source with several.
        limit: stop after this many prompts.
        tokenizer, window_tokens, window_stride: how plain text files are cut into prompts (see `text_windows`).
    """
    from .conversations import SHAREGPT_NAME, first_user_turn, is_json_array, read_conversations

    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    prompts: list[str] = []
    for source in sources:
        remaining = None if limit is None else limit - len(prompts)
        if remaining is not None and remaining <= 0:
            break
        path = Path(source)
        if str(source) == SHAREGPT_NAME or (path.suffix in JSON_SUFFIXES and path.is_file() and is_json_array(path)):
            # A conversation export: each conversation's first user turn is its prompt.
            prompts += [first_user_turn(messages) for messages in read_conversations(source, remaining)]
        elif path.suffix in JSON_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"Prompt file {str(source)!r} does not exist.")
            prompts += read_jsonl_prompts(path, field, remaining)
        elif path.is_file():
            if tokenizer is None:
                raise ValueError(f"Cutting the plain text file {path} into prompt windows needs a tokenizer.")
            text = path.read_text(encoding="utf-8", errors="replace")
            prompts += text_windows(text, tokenizer, window_tokens, window_stride, remaining)
        elif path.is_dir() and not is_saved_dataset(path):
            raise ValueError(f"{path} is a folder but not a saved `datasets` dataset; pass files or a JSONL.")
        elif not path.exists() and (path.is_absolute() or str(source).startswith((".", "~"))):
            raise FileNotFoundError(f"Prompt source {str(source)!r} does not exist.")
        else:
            prompts += read_dataset_prompts(source, field, split, remaining)
    if not prompts:
        raise ValueError(f"No prompts found in {[str(source) for source in sources]}.")
    return prompts


def encode_prompt(
    tokenizer, text: str, chat_template: bool = False, system_prompt: str | None = None,
    add_special_tokens: bool = False,
) -> list[int]:
    """The token ids of one prompt; with `chat_template`, the prompt is a user turn (after `system_prompt`, if any)
    with the assistant's turn opened, thinking off (the Qwen3 template reads that flag; others ignore it)."""
    if not chat_template:
        return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat-template was given, but the tokenizer has no chat template.")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": text}
    ]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
    )
    if hasattr(ids, "keys"):  # some tokenizers return an encoding whatever `return_dict` says
        ids = ids["input_ids"]
    return list(ids)


__all__ = [
    "JSON_SUFFIXES",
    "PROMPT_FIELDS",
    "encode_prompt",
    "is_saved_dataset",
    "load_prompts",
    "needs_datasets",
    "prompt_text",
    "read_dataset_prompts",
    "read_jsonl_prompts",
    "text_windows",
]
