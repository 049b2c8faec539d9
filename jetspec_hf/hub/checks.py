"""What must hold before a head folder goes to the Hub: complete, loading the head from its own repository, fitting
the base model its card names, and showing bench results of this very head."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..compatibility import head_fit_problems
from ..weights_fingerprint import folder_fingerprint
from .files import BENCH_FILE, CARD_FILE, is_draft_head_folder, read_json
from .remote_code import CUSTOM_GENERATE_DIR, read_head_location

# The keys under which a bench report records the fingerprints of the heads it measured.
BENCH_FINGERPRINT_KEYS = ("head_fingerprint", "dflash_head_fingerprint")


def load_base_model_config(base_model: str):
    """The config of the target a card names (from the Hub, or its cache when offline)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base_model)


def bench_mismatch(bench: Mapping | None, fingerprint: str | None) -> str | None:
    """Why a bench report is not about the head with weights `fingerprint`; `None` when it is, or cannot be told
    (a report from before fingerprints were recorded, or a head without weight files)."""
    if bench is None or fingerprint is None:
        return None
    measured = [bench[key] for key in BENCH_FINGERPRINT_KEYS if bench.get(key)]
    if not measured or fingerprint in measured:
        return None
    return (
        f"the bench results measured another head (weights fingerprint {', '.join(value[:12] for value in measured)}, "
        f"these weights are {fingerprint[:12]}): run `jetspec-hf bench` with this head, or leave the bench JSON out"
    )


def base_model_mismatch(head_config, base_model: str, base_model_config=None) -> str | None:
    """Why the head does not fit `base_model`; `None` when it fits. Raises `OSError` when no config is given and
    the base model's cannot be read."""
    if base_model_config is None:
        base_model_config = load_base_model_config(base_model)
    problems = head_fit_problems(head_config, base_model_config)
    if not problems:
        return None
    return f"the head does not fit its base model {base_model}: " + "; ".join(problems)


def check_hub_folder(folder: str | Path, repo_id: str | None = None, base_model_config=None) -> list[str]:
    """Problems that would make a prepared folder wrong once pushed to `repo_id` (empty list: none).

    Checks that the config, weights and card are there; that `custom_generate/generate.py` (when present) loads the
    head from `repo_id`, not from a local path or another repository; for a draft head, that it fits the base model
    the card names (its config is read from the Hub unless `base_model_config` is given); and that
    `bench_results.json` reports these weights.
    """
    from huggingface_hub import ModelCard

    from ..configuration_jetspec import JetSpecConfig

    folder = Path(folder)
    problems = []
    has_config = (folder / "config.json").is_file()
    if not has_config:
        problems.append("no config.json")
    fingerprint = folder_fingerprint(folder)
    if fingerprint is None:
        problems.append("no *.safetensors weights")
    if not (folder / CARD_FILE).is_file():
        problems.append(f"no {CARD_FILE} model card")
    if (folder / CUSTOM_GENERATE_DIR / "generate.py").is_file() and repo_id is not None:
        location = read_head_location(folder)
        if location != repo_id:
            problems.append(
                f"custom_generate/generate.py loads the head from {location!r}, not from {repo_id!r}: prepare the "
                f"folder again with repo_id={repo_id!r}"
            )
    if has_config and (folder / CARD_FILE).is_file() and is_draft_head_folder(folder):
        base_model = ModelCard.load(folder / CARD_FILE).data.base_model
        if not base_model:
            problems.append(f"the {CARD_FILE} card names no base_model")
        else:
            try:
                mismatch = base_model_mismatch(JetSpecConfig.from_pretrained(folder), base_model, base_model_config)
            except OSError as error:
                mismatch = (
                    f"cannot read the config of the base model {base_model!r} to check that the head fits it ({error})"
                )
            if mismatch:
                problems.append(mismatch)
    if (folder / BENCH_FILE).is_file():
        mismatch = bench_mismatch(read_json(folder / BENCH_FILE), fingerprint)
        if mismatch:
            problems.append(mismatch)
    return problems


__all__ = [
    "BENCH_FINGERPRINT_KEYS",
    "base_model_mismatch",
    "bench_mismatch",
    "check_hub_folder",
    "load_base_model_config",
]
