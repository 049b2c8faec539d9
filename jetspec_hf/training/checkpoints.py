"""Checkpoints of a training run: `checkpoint-<step>/` holds the head as `save_pretrained` writes it (loadable on its
own) and `state/` the rest of what `--resume` needs: the optimizer's moments, the scheduler, the step counter and
the RNG states.

Nothing in `state/` can run code when it is read: tensors are safetensors files and everything else is JSON
(`training_state.json`, `optimizer.safetensors`, `rng-<process>.safetensors`). A checkpoint folder may come from
anywhere (a shared drive, a download), and a pickle, which is what `accelerate.save_state` writes, runs whatever a
tampered file says when it is loaded; so `--resume` reads no pickle, and a state folder in that older layout is
refused with the reason.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FOLDER = "state"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FORMAT_VERSION = 1


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


def save_training_state(folder: Path, optimizer, scheduler, progress: TrainingProgress, process_index: int,
                        is_main: bool) -> None:
    """Write the resumable state into `folder` (each process its RNG state, the main process the rest)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(folder / f"rng-{process_index}.safetensors"))
    if not is_main:
        return
    state = optimizer.state_dict()
    tensors, moments = {}, {}
    for param_id, values in state["state"].items():
        moments[str(param_id)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                moments[str(param_id)][name] = value
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    record = {
        "format_version": STATE_FORMAT_VERSION,
        "progress": progress.state_dict(),
        "optimizer": {"param_groups": state["param_groups"], "scalars": moments},
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if _is_json_value(v)},
        "python_random": _to_json(random.getstate()),
    }
    (folder / STATE_FILE).write_text(json.dumps(record, indent=1))


def load_training_state(folder: Path, optimizer, scheduler, progress: TrainingProgress, process_index: int) -> None:
    """Restore what `save_training_state` wrote; nothing in `folder` is unpickled."""
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        pickles = sorted(path.name for path in folder.iterdir() if path.suffix in (".pkl", ".bin", ".pt"))
        raise ValueError(
            f"{folder} holds no {STATE_FILE}" + (f" but pickled files ({', '.join(pickles)})" if pickles else "")
            + ": it is not a state this version can resume from. Resuming reads only JSON and safetensors, because "
            "loading a pickle runs whatever code a tampered file carries. Start a new run (the head in the "
            "checkpoint folder loads with from_pretrained), or resume from a checkpoint written by this version."
        )
    record = json.loads(state_path.read_text())
    if record.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(f"{state_path}: state format {record.get('format_version')} is not "
                         f"{STATE_FORMAT_VERSION}.")
    tensors = load_file(str(folder / OPTIMIZER_FILE))
    optimizer_state: dict = {}
    for param_id, scalars in record["optimizer"]["scalars"].items():
        optimizer_state[int(param_id)] = dict(scalars)
    for key, value in tensors.items():
        param_id, name = key.split(".", 1)
        optimizer_state.setdefault(int(param_id), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": record["optimizer"]["param_groups"]})
    scheduler_state = scheduler.state_dict()
    scheduler_state.update(record["scheduler"])
    scheduler.load_state_dict(scheduler_state)
    progress.load_state_dict(record["progress"])
    random.setstate(_from_json(record["python_random"]))
    rng_path = folder / f"rng-{process_index}.safetensors"
    if rng_path.is_file():
        rng = load_file(str(rng_path))
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda.")])


def _is_json_value(value) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _to_json(value):
    return [_to_json(v) for v in value] if isinstance(value, tuple) else value


def _from_json(value):
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


__all__ = [
    "CHECKPOINT_PREFIX",
    "STATE_FOLDER",
    "TrainingProgress",
    "checkpoint_step",
    "find_latest_checkpoint",
    "load_training_state",
    "save_training_state",
    "list_checkpoints",
    "prune_checkpoints",
    "resume_state_folder",
]
