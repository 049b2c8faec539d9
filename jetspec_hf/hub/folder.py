"""Preparing a Hub-ready folder for a draft head: weights, config, card, `custom_generate/`, bench results.

Nothing is written before every check has passed (extras, base model id and fit, bench results of this head,
files that would be replaced), and no existing file is replaced without `overwrite=True`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from transformers import GenerationConfig

from ..configuration_jetspec import JetSpecConfig
from ..log import get_logger
from ..modeling_jetspec import JetSpecDraftModel
from ..weights_fingerprint import folder_fingerprint, state_dict_fingerprint
from .card_facts import count_safetensors_parameters
from .cards import check_base_model_id, render_head_card, require_card_extras
from .checks import base_model_mismatch, bench_mismatch
from .files import BENCH_FILE, CARD_FILE, COPIED_FILES, find_training_record, read_json
from .remote_code import CUSTOM_GENERATE_DIR, write_custom_generate

logger = get_logger(__name__)


def _files_to_write(source_dir: Path | None, in_place: bool, bench: bool, custom_generate: bool) -> list[str]:
    names = [CARD_FILE]
    if not in_place:
        names += ["config.json", "model.safetensors", "model.safetensors.index.json"]
        names += [name for name in COPIED_FILES if source_dir is not None and (source_dir / name).is_file()]
    if bench:
        names.append(BENCH_FILE)
    if custom_generate:
        names.append(CUSTOM_GENERATE_DIR)
    return names


def _check_fit(config: JetSpecConfig, base_model: str, base_model_config) -> None:
    try:
        mismatch = base_model_mismatch(config, base_model, base_model_config)
    except OSError as error:
        # Preparing offline is fine; `push_head_to_hub` checks again, and refuses, before anything is uploaded.
        logger.warning("cannot read the config of %s to check that the head fits it (%s); it is checked again "
                       "before pushing", base_model, error)
        return
    if mismatch:
        raise ValueError(mismatch[0].upper() + mismatch[1:] + ".")


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
    overwrite: bool = False,
    base_model_config=None,
) -> Path:
    """Write a repository folder for a draft head: weights, config, `README.md` card, `custom_generate/`.

    Args:
        head: a trained head's folder (our format or the released one) or a loaded `JetSpecDraftModel`.
        output_dir: the folder to write. When it is `head`'s own folder, the weights and config are left as they
            are and only the card, `custom_generate/` and the bench copy are written.
        base_model: Hub repo id of the target the head drafts for; the head must fit it (checked when its config
            can be read, or given as `base_model_config`).
        bench_json: bench results (path or parsed JSON) for the card's table; copied as `bench_results.json`. A
            report that recorded another head's weights is refused.
        license: license id for the card metadata.
        repo_id: the repository the folder will be pushed to. It is written into the card's snippets and into
            `custom_generate/generate.py` as the place to load the head from; without it, `generate.py` loads the
            head from `output_dir` (absolute path), which suits local use only.
        training_args: the trainer's record; default: `training_args.json` in the head's folder, if any.
        training_data: a description of the training data for the card.
        model_name: the card's title.
        custom_generate: whether to write `custom_generate/` (the no-install path).
        datasets, language, tags: more card metadata.
        template: another card template instead of the shipped `templates/draft_head.md.j2`.
        overwrite: replace files `output_dir` already holds (the card included); without it they are refused.
        base_model_config: the base model's config, instead of reading it from the Hub.

    Returns:
        `output_dir` as a `Path`.
    """
    require_card_extras()
    check_base_model_id(base_model)
    output_dir = Path(output_dir)
    source_dir = None if isinstance(head, JetSpecDraftModel) else Path(head)
    in_place = source_dir is not None and output_dir.exists() and source_dir.resolve() == output_dir.resolve()
    bench = read_json(bench_json)

    existing = [name for name in _files_to_write(source_dir, in_place, bench is not None, custom_generate)
                if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds {', '.join(existing)}: pass overwrite=True (--overwrite) to replace them, "
            "or prepare into a new folder."
        )
    if in_place:
        config = JetSpecConfig.from_pretrained(source_dir)
        num_parameters = count_safetensors_parameters(source_dir)
        fingerprint = folder_fingerprint(source_dir)
        generation_config = None
        if (source_dir / "generation_config.json").is_file():
            generation_config = GenerationConfig.from_pretrained(source_dir)
    else:
        if source_dir is not None:
            # dtype="auto" keeps the dtype the weights were saved in instead of upcasting to float32.
            head = JetSpecDraftModel.from_pretrained(source_dir, dtype="auto")
        config, num_parameters = head.config, head.num_parameters()
        fingerprint = state_dict_fingerprint(head.state_dict())
        generation_config = head.generation_config
    _check_fit(config, base_model, base_model_config)
    mismatch = bench_mismatch(bench, fingerprint)
    if mismatch:
        raise ValueError(mismatch[0].upper() + mismatch[1:] + ".")

    output_dir.mkdir(parents=True, exist_ok=True)
    if not in_place:
        head.save_pretrained(output_dir)
        for name in COPIED_FILES if source_dir is not None else ():
            if (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, output_dir / name)
    if training_args is None and source_dir is not None:
        training_args = find_training_record(source_dir)
    if bench is not None:
        (output_dir / BENCH_FILE).write_text(json.dumps(bench, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if custom_generate:
        write_custom_generate(output_dir, head_location=repo_id or str(output_dir.resolve()))
    card = render_head_card(
        config,
        generation_config=generation_config,
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


__all__ = ["prepare_hub_folder"]
