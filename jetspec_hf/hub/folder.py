"""Preparing a Hub-ready folder for a draft head (weights, config, card, `custom_generate/`) and pushing it."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import HfApi

from ..configuration_jetspec import JetSpecConfig
from ..modeling_jetspec import JetSpecDraftModel
from .cards import (
    count_safetensors_parameters,
    find_training_record,
    read_json,
    render_head_card,
    require_card_extras,
)
from .files import BENCH_FILE, CARD_FILE, COPIED_FILES
from .remote_code import CUSTOM_GENERATE_DIR, read_head_location, write_custom_generate

logger = logging.getLogger(__name__)

# Never uploaded: byte-code and local caches that a folder may pick up while being tested.
UPLOAD_IGNORE_PATTERNS = ["**/__pycache__/**", "*.pyc", ".cache/**", "**/.ipynb_checkpoints/**"]


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.safetensors.index.json"))


def prepare_hub_folder(
    head: str | Path | JetSpecDraftModel,
    output_dir: str | Path,
    *,
    base_model: str,
    bench_json: str | Path | Mapping | None = None,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    training_args: str | Path | Mapping | None = None,
    training_data: str | None = None,
    model_name: str | None = None,
    custom_generate: bool = True,
    datasets: list[str] | None = None,
    language: str | list[str] | None = None,
    tags: list[str] | None = None,
    template: str | Path | None = None,
) -> Path:
    """Write a repository folder for a draft head: weights, config, `README.md` card, `custom_generate/`.

    Args:
        head: a trained head's folder (our format or the released one) or a loaded `JetSpecDraftModel`.
        output_dir: the folder to write. When it is `head`'s own folder, the weights and config are left as they
            are and only the card, `custom_generate/` and the bench copy are (re)written.
        base_model: repo id of the target the head drafts for.
        bench_json: bench results (path or parsed JSON) for the card's table; copied as `bench_results.json`.
        license: license id for the card metadata.
        repo_id: the repository the folder will be pushed to. It is written into the card's snippets and into
            `custom_generate/generate.py` as the place to load the head from; without it, `generate.py` loads the
            head from `output_dir` (absolute path), which suits local use only.
        training_args: the trainer's record; default: `training_args.json` in the head's folder, if any.
        training_data: a description of the training data for the card.
        model_name: the card's title.
        custom_generate: whether to write `custom_generate/` (the no-install path).
        datasets, language, tags: more card metadata.
        template: another card template instead of `hub_cards/draft_head.md.j2`.

    Returns:
        `output_dir` as a `Path`.
    """
    require_card_extras()
    output_dir = Path(output_dir)
    source_dir = None if isinstance(head, JetSpecDraftModel) else Path(head)
    in_place = source_dir is not None and output_dir.exists() and source_dir.resolve() == output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)

    if in_place:
        config = JetSpecConfig.from_pretrained(source_dir)
        num_parameters = count_safetensors_parameters(source_dir)
    else:
        if source_dir is not None:
            # dtype="auto" keeps the dtype the weights were saved in instead of upcasting to float32.
            head = JetSpecDraftModel.from_pretrained(source_dir, dtype="auto")
        head.save_pretrained(output_dir)
        config = head.config
        num_parameters = head.num_parameters()
        if source_dir is not None:
            for name in COPIED_FILES:
                if (source_dir / name).is_file() and not (output_dir / name).exists():
                    shutil.copyfile(source_dir / name, output_dir / name)

    if training_args is None and source_dir is not None:
        training_args = find_training_record(source_dir)
    bench = read_json(bench_json)
    if bench is not None:
        (output_dir / BENCH_FILE).write_text(json.dumps(bench, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    if custom_generate:
        write_custom_generate(output_dir, head_location=repo_id or str(output_dir.resolve()))
    card = render_head_card(
        config,
        base_model=base_model,
        num_parameters=num_parameters,
        bench=bench,
        training_args=training_args,
        training_data=training_data,
        repo_id=repo_id,
        model_name=model_name,
        license=license,
        custom_generate=custom_generate,
        datasets=datasets,
        language=language,
        extra_tags=tags,
        template=template,
    )
    card.save(output_dir / CARD_FILE)
    return output_dir


def check_hub_folder(folder: str | Path, repo_id: str | None = None) -> list[str]:
    """Problems that would make a prepared folder unusable once pushed to `repo_id` (empty list: none).

    Checks that the config, weights and card are there, and that `custom_generate/generate.py` (when present) loads
    the head from `repo_id`, not from a local path or another repository.
    """
    folder = Path(folder)
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("no config.json")
    if not _weight_files(folder):
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
    return problems


def push_head_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    api: HfApi | None = None,
):
    """Create `repo_id` if needed and upload a folder written by `prepare_hub_folder`.

    The folder is checked first (`check_hub_folder`): a `custom_generate/generate.py` that would load the head
    from anywhere but `repo_id` is refused.

    Args:
        folder: the prepared folder.
        repo_id: the model repository, `"org/name"`.
        token: a Hub token (default: the logged-in one).
        private: visibility when the repository is created.
        revision: branch to commit to (default: the main branch).
        commit_message: default "Upload JetSpec draft head".
        create_pr: open a pull request instead of committing directly.
        api: the `HfApi` client to use (default: a new one with `token`).

    Returns:
        The `CommitInfo` of the upload.
    """
    folder = Path(folder)
    problems = check_hub_folder(folder, repo_id)
    if problems:
        raise ValueError(f"{folder} is not ready to push to {repo_id}: " + "; ".join(problems) + ".")
    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, token=token, repo_type="model", exist_ok=True)
    logger.info("uploading %s to %s", folder, repo_id)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=commit_message or "Upload JetSpec draft head",
        token=token,
        create_pr=create_pr,
        ignore_patterns=UPLOAD_IGNORE_PATTERNS,
    )


__all__ = ["check_hub_folder", "prepare_hub_folder", "push_head_to_hub"]
