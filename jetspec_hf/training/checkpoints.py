"""Checkpoints of a training run: `checkpoint-<step>/` holds the head as `save_pretrained` writes it (loadable on its
own) and `state/` the rest of what `--resume` needs (optimizer, scheduler, RNG states, step counter), written by
accelerate without a second copy of the weights."""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FOLDER = "state"
WEIGHTS_FILE = "model.safetensors"


class TrainingProgress:
    """Counters saved with every checkpoint (registered with the accelerator, so that `load_state` restores them)."""

    def __init__(self):
        self.step = 0
        self.best_eval_accept = None

    def state_dict(self) -> dict:
        return {"step": self.step, "best_eval_accept": self.best_eval_accept}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.best_eval_accept = state.get("best_eval_accept")


def checkpoint_step(path: Path) -> int | None:
    """The step of a `checkpoint-<step>` folder, or `None` for any other name."""
    suffix = path.name[len(CHECKPOINT_PREFIX):] if path.name.startswith(CHECKPOINT_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The `checkpoint-<step>` folders of `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(path), path) for path in folder.glob(f"{CHECKPOINT_PREFIX}*") if path.is_dir()]
    return [path for step, path in sorted(item for item in found if item[0] is not None)]


def find_latest_checkpoint(folder: str | Path) -> Path | None:
    """The `checkpoint-<step>` folder with the highest step that holds a complete training state."""
    complete = [path for path in list_checkpoints(folder) if (path / STATE_FOLDER).is_dir()]
    return complete[-1] if complete else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints."""
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resume_state_folder(resume: str, checkpoint_dir: Path) -> Path | None:
    """The `state/` folder that `--resume` names (`latest`, a `checkpoint-<step>` folder or its `state/`);
    `None` for `latest` when there is no checkpoint yet."""
    path = find_latest_checkpoint(checkpoint_dir) if resume == "latest" else Path(resume)
    if path is None:
        return None
    if (path / STATE_FOLDER).is_dir():
        path = path / STATE_FOLDER
    if not path.is_dir() or not (path.parent / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"--resume {resume}: {path} is not the state of a checkpoint-<step> folder (with its {WEIGHTS_FILE})."
        )
    return path


def keep_weights_out_of_state(accelerator, head_module) -> None:
    """Make `accelerator.save_state` / `load_state` leave the head's weights to the checkpoint folder.

    The checkpoint folder already holds them (`save_pretrained`), one level above `state/`; accelerate would write
    a second copy into `state/`. On load they are read from there into `head_module` (the unwrapped head).
    """

    def drop_weights(models, weights, output_dir) -> None:
        weights.clear()

    def load_weights(models, input_dir) -> None:
        state = load_file(str(Path(input_dir).parent / WEIGHTS_FILE))
        head_module.load_state_dict(state)
        models.clear()

    accelerator.register_save_state_pre_hook(drop_weights)
    accelerator.register_load_state_pre_hook(load_weights)


__all__ = [
    "CHECKPOINT_PREFIX",
    "STATE_FOLDER",
    "TrainingProgress",
    "checkpoint_step",
    "find_latest_checkpoint",
    "keep_weights_out_of_state",
    "list_checkpoints",
    "prune_checkpoints",
    "resume_state_folder",
]
