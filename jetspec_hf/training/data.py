"""Self-distillation data: prompts in, the target's own greedy continuations out, stored as token-id sequences.

A head drafts what the TARGET would say, so it is trained on the target's own outputs rather than on the original
responses of a dataset (docs/design.md §9). Each stored record is
``{"input_ids": prompt + continuation, "prompt_length": P}``; positions >= P are the training labels. Records are
written as JSONL (a `.jsonl` path) or as a `datasets.Dataset` saved to disk (any other path).

A record may also carry ``"labels"`` (one token per position): what the target would say at each position given
the record's tokens before it (`target_argmax_labels`). Real text labelled that way is training data too: its
context is what prompts look like, and its labels are still the target's. Without the field the labels are the
record's own tokens, which for a greedy continuation is the same thing.

Prompts come from JSON Lines files, `datasets` folders or names, or plain text files cut into token windows, read
by `jetspec_hf.prompts` (the benchmark reads its prompts the same way).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..extras import require_extra
from ..log import progress_bar
from ..prompts import encode_prompt, is_saved_dataset, read_dataset_prompts, read_jsonl_prompts, text_windows
from ..prompts import load_prompts as load_prompt_sources


# ----------------------------------------------------------------------------------------------------------------
# Prompt sources (read by jetspec_hf.prompts, shared with the benchmark; the names below are this module's API)


def load_prompts(
    paths: Sequence[str | os.PathLike],
    tokenizer=None,
    text_field: str | None = None,
    window_tokens: int = 64,
    window_stride: int | None = None,
    split: str | None = None,
) -> list[str]:
    """Prompts from every source: JSONL files, saved datasets, `datasets` names, or plain text files (cut into
    token windows). See `jetspec_hf.prompts.load_prompts`."""
    return load_prompt_sources(
        paths, field=text_field, split=split, tokenizer=tokenizer, window_tokens=window_tokens,
        window_stride=window_stride,
    )


# ----------------------------------------------------------------------------------------------------------------
# Generation


def encode_prompts(
    tokenizer, prompts: Sequence[str], max_prompt_tokens: int | None = None, chat_template: bool = False,
    system_prompt: str | None = None,
) -> list[list[int]]:
    """Token ids of every prompt; with `chat_template`, each prompt is a user turn (thinking off for Qwen3).

    Prompts longer than `max_prompt_tokens` keep their LAST tokens: the end of a prompt is what the continuation
    follows from. Prompts that encode to nothing are dropped.
    """
    encoded = []
    for prompt in prompts:
        ids = encode_prompt(tokenizer, prompt, chat_template, system_prompt)
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
        if ids:
            encoded.append(ids)
    return encoded


def _eos_ids(target: nn.Module, tokenizer) -> list[int]:
    eos = target.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def cut_at_eos(continuation: list[int], eos_ids: Iterable[int]) -> list[int]:
    """The continuation up to and including its first EOS (later tokens are generate's padding)."""
    eos_ids = set(eos_ids)
    for index, token in enumerate(continuation):
        if token in eos_ids:
            return continuation[: index + 1]
    return continuation


@torch.no_grad()
def generate_continuations(
    target: nn.Module,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int = 192,
    batch_size: int = 32,
    show_progress: bool = True,
) -> list[dict]:
    """Greedy continuations of every prompt by `target`, batched with left padding.

    Prompts are batched in length order (less padding), and the records come back in the input order:
    ``{"input_ids": prompt + continuation, "prompt_length": len(prompt)}``, the continuation cut after its first EOS.
    """
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token; batched generation needs one.")
    eos_ids = _eos_ids(target, tokenizer)
    device = next(target.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    records: list[dict | None] = [None] * len(prompt_ids)
    progress = progress_bar(total=len(order), desc="generating", disable=not show_progress)
    for start in range(0, len(order), batch_size):
        batch_indices = order[start : start + batch_size]
        batch = [list(prompt_ids[i]) for i in batch_indices]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            # Left padding: every prompt ends at the last column, where generation continues.
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        output = target.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_ids or None,
            # Sampling knobs of the target's generation config would only trigger warnings under greedy.
            temperature=None,
            top_p=None,
            top_k=None,
        )
        for row, index in enumerate(batch_indices):
            continuation = cut_at_eos(output[row, width:].tolist(), eos_ids)
            records[index] = {"input_ids": batch[row] + continuation, "prompt_length": len(batch[row])}
        progress.update(len(batch))
    progress.close()
    return records  # type: ignore[return-value]


@torch.no_grad()
def target_argmax_labels(
    target: nn.Module, records: Sequence[dict], batch_size: int = 16, show_progress: bool = True
) -> list[dict]:
    """Copies of `records` with ``"labels"``: at every position t >= 1, the target's greedy token after the record's
    tokens ``0..t-1`` (position 0 keeps its own token; nothing predicts it and no block ever labels it).

    This is how text the target did not write becomes training data for its head: a block anchored on it learns the
    target's choice, not the text's. One full forward per batch (right padding needs no mask: a real position
    never sees the padding after it).
    """
    device = next(target.parameters()).device
    labelled: list[dict] = []
    progress = progress_bar(total=len(records), desc="labelling", disable=not show_progress, mininterval=5.0)
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        lengths = [len(r["input_ids"]) for r in batch]
        input_ids = torch.zeros((len(batch), max(lengths)), dtype=torch.long)
        for row, record in enumerate(batch):
            input_ids[row, : lengths[row]] = torch.tensor(record["input_ids"], dtype=torch.long)
        predicted = target(input_ids=input_ids.to(device), use_cache=False).logits.argmax(-1).cpu()
        for row, record in enumerate(batch):
            labels = [record["input_ids"][0]] + predicted[row, : lengths[row] - 1].tolist()
            labelled.append({**record, "labels": labels})
        progress.update(len(batch))
    progress.close()
    return labelled


# ----------------------------------------------------------------------------------------------------------------
# Storage


def save_sequences(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write records as JSONL (path ending in `.jsonl`) or as a `datasets.Dataset` folder (any other path).

    `labels` are written where a record has them. A dataset needs the column in every row, so there a record
    without them gets its own tokens, which is what a missing field means anyway.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for record in records:
                row = {"input_ids": record["input_ids"], "prompt_length": record["prompt_length"]}
                if record.get("labels") is not None:
                    row["labels"] = record["labels"]
                handle.write(json.dumps(row))
                handle.write("\n")
        return path
    require_extra("train", "datasets", purpose=f"Saving token sequences as a `datasets` folder ({path})")
    from datasets import Dataset

    columns = {"input_ids": [r["input_ids"] for r in records], "prompt_length": [r["prompt_length"] for r in records]}
    if any(r.get("labels") is not None for r in records):
        columns["labels"] = [r["labels"] if r.get("labels") is not None else r["input_ids"] for r in records]
    Dataset.from_dict(columns).save_to_disk(str(path))
    return path


def load_sequences(path: str | os.PathLike) -> list[dict]:
    """Read token sequences written by `save_sequences` (JSONL or a saved dataset).

    A record without `prompt_length` (plain tokenized text) is trained on every position; `labels` are kept when
    present (same length as `input_ids`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Token sequence data {path} does not exist (make it with `generate-data`).")
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    rows.append(json.loads(line))
    elif is_saved_dataset(path):
        require_extra("train", "datasets", purpose=f"Reading the `datasets` folder {path}")
        from datasets import load_from_disk

        rows = list(load_from_disk(str(path)))
    else:
        raise ValueError(f"{path} is neither a .jsonl file nor a saved `datasets.Dataset` folder.")
    records = []
    for index, row in enumerate(rows):
        if "input_ids" not in row:
            raise ValueError(f"{path}: record {index} has no `input_ids`.")
        record = {"input_ids": [int(t) for t in row["input_ids"]], "prompt_length": int(row.get("prompt_length", 0))}
        if row.get("labels") is not None:
            if len(row["labels"]) != len(record["input_ids"]):
                raise ValueError(f"{path}: record {index} has {len(row['labels'])} labels for "
                                 f"{len(record['input_ids'])} tokens.")
            record["labels"] = [int(t) for t in row["labels"]]
        records.append(record)
    return records


def fingerprint_sequences(records: Sequence[dict]) -> str:
    """A hash of all token ids and prompt lengths: identifies the data a feature cache was built from."""
    digest = hashlib.sha1()
    for record in records:
        digest.update(torch.tensor(record["input_ids"], dtype=torch.int32).numpy().tobytes())
        digest.update(int(record["prompt_length"]).to_bytes(4, "little"))
        digest.update(b"|")
    return digest.hexdigest()


__all__ = [
    "cut_at_eos",
    "encode_prompts",
    "fingerprint_sequences",
    "generate_continuations",
    "is_saved_dataset",
    "load_prompts",
    "load_sequences",
    "read_dataset_prompts",
    "read_jsonl_prompts",
    "save_sequences",
    "target_argmax_labels",
    "text_windows",
]
