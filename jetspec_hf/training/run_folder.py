"""The folders a training run writes to, kept free of earlier runs: a fresh run refuses folders that hold one
(unless told to clear it), and a resumed run drops the log lines past the step it resumes from, so that neither
`log.jsonl` nor `--resume latest` mixes two runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .checkpoints import list_checkpoints

LOG_FILE = "log.jsonl"
TRAINING_ARGS_FILE = "training_args.json"
EVAL_RESULTS_FILE = "eval_results.json"
# What a finished or interrupted run leaves in its output folder, besides checkpoints and the head itself.
RUN_RECORD_FILES = (LOG_FILE, TRAINING_ARGS_FILE, EVAL_RESULTS_FILE)


def earlier_run(output_dir: str | Path, checkpoint_dir: str | Path | None = None) -> list[Path]:
    """The records and checkpoints of an earlier run in these folders (empty when they are new or empty)."""
    output_dir = Path(output_dir)
    found = [output_dir / name for name in RUN_RECORD_FILES if (output_dir / name).is_file()]
    for folder in dict.fromkeys([output_dir, Path(checkpoint_dir or output_dir)]):
        found += list_checkpoints(folder)
    return found


def check_run_folders(output_dir: str, checkpoint_dir: str | None, resume: str | None, overwrite: bool) -> None:
    """Refuse to start a fresh run in folders that hold an earlier one: its log would be appended to, and its
    checkpoints picked by `--resume latest`."""
    if resume or overwrite:
        return
    found = earlier_run(output_dir, checkpoint_dir)
    if found:
        names = ", ".join(str(path) for path in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(
            f"{output_dir} holds an earlier training run ({names}). Pass --resume latest to continue it, "
            "--overwrite-output-dir to delete it and start afresh, or another --output-dir."
        )


def clear_earlier_run(output_dir: str | Path, checkpoint_dir: str | Path | None = None) -> None:
    """Delete an earlier run's records and checkpoints (the head files are replaced when the new run ends)."""
    for path in earlier_run(output_dir, checkpoint_dir):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


class TrainingLog:
    """`log.jsonl`: one JSON object a line per logged step or evaluation."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOG_FILE

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def keep_until(self, step: int) -> None:
        """Drop the lines past `step`: a run resumed there writes them again."""
        if not self.path.is_file():
            return
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# The settings in `training_args.json` that name folders of the machine the run was on.
PATH_SETTINGS = ("output_dir", "checkpoint_dir", "cache_features", "init_from_head", "resume")


def portable_training_args(path: str | Path, repo: Path, work_dir: Path, made_by: str) -> None:
    """Rewrite the folder settings of a `training_args.json` relative to `repo`, or as `<work-dir>/...` under
    `work_dir` (else `<elsewhere>/<name>`), and record `made_by`: a shipped record must not carry this machine's
    paths."""
    path = Path(path)
    record = json.loads(path.read_text())
    for key in PATH_SETTINGS:
        value = record["args"].get(key)
        if value is None or (key in ("init_from_head", "resume") and not Path(value).exists()):
            continue  # unset, a Hub repo id or `latest`
        value = Path(value).resolve()
        if value.is_relative_to(repo.resolve()):
            record["args"][key] = value.relative_to(repo.resolve()).as_posix()
        elif value.is_relative_to(work_dir.resolve()):
            record["args"][key] = "<work-dir>/" + value.relative_to(work_dir.resolve()).as_posix()
        else:
            record["args"][key] = "<elsewhere>/" + value.name
    record["made_by"] = made_by
    path.write_text(json.dumps(record, indent=2) + "\n")


__all__ = [
    "EVAL_RESULTS_FILE",
    "LOG_FILE",
    "RUN_RECORD_FILES",
    "TRAINING_ARGS_FILE",
    "TrainingLog",
    "check_run_folders",
    "clear_earlier_run",
    "earlier_run",
    "portable_training_args",
]
