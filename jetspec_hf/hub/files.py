"""The files of a model repository: their names, which files of a folder belong in it, and reading the JSON ones.

Kept free of heavy imports: the command line reads these names to build its help.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

CARD_FILE = "README.md"
BENCH_FILE = "bench_results.json"
TRAINING_ARGS_FILE = "training_args.json"
# Training records looked for in a model folder, in this order: the head trainer's, then the bundled LM scripts'.
TRAINING_RECORD_FILES = (TRAINING_ARGS_FILE, "training_summary.json")

# Files of a training output folder that belong in the repository as they are: the target's tokenizer (the trainer
# saves it beside the head, handy for users) and the training record.
COPIED_FILES = (
    TRAINING_ARGS_FILE,
    "eval_results.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)



# What a model repository of a head needs, as patterns of paths relative to the folder: weights, configs, card,
# bench and training records, tokenizer files and the `custom_generate/` code. Anything else a training output holds
# (checkpoints, optimizer states, pickled RNG states, logs) stays local.
REPOSITORY_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    CARD_FILE,
    BENCH_FILE,
    "training_summary.json",
    *(name for name in COPIED_FILES if name != "generation_config.json"),
    "tokenizer.model",
    "added_tokens.json",
    "custom_generate/*.py",
    "custom_generate/requirements.txt",
)


def repository_files(folder: str | Path) -> list[str]:
    """The files of `folder` that belong in its model repository (`REPOSITORY_FILE_PATTERNS`), relative paths."""
    folder = Path(folder)
    found = {path for pattern in REPOSITORY_FILE_PATTERNS for path in folder.glob(pattern) if path.is_file()}
    return sorted(path.relative_to(folder).as_posix() for path in found)


def is_draft_head_folder(folder: str | Path) -> bool:
    """Whether `folder/config.json` describes a JetSpec / DFlash head (this package's format or the released one)."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return config.get("model_type") == "jetspec" or "dflash_config" in config or "block_size" in config


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


__all__ = [
    "BENCH_FILE",
    "CARD_FILE",
    "COPIED_FILES",
    "TRAINING_ARGS_FILE",
    "REPOSITORY_FILE_PATTERNS",
    "TRAINING_RECORD_FILES",
    "find_training_record",
    "is_draft_head_folder",
    "read_json",
    "repository_files",
]
