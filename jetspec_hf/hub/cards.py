"""Model cards for draft heads (and plain causal LMs), rendered from the Jinja templates in `hub_cards/`
(shipped in the package as `jetspec_hf/hub/templates/`, a link to it).

Everything a card states is computed from the saved config, the weight files, a training record and a bench JSON
(`card_facts`, `card_training`, `card_results`); the templates only lay it out. Missing inputs leave their section
with a short note instead of failing, since a card is often rendered before every number exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..extras import require_extra
from .card_facts import describe_causal_lm, describe_head
from .card_results import is_local_path, summarize_bench
from .card_training import summarize_training
from .files import read_json

HEAD_TEMPLATE = "draft_head.md.j2"
CAUSAL_LM_TEMPLATE = "causal_lm.md.j2"

# The target's family is not the head's to claim (heads exist for Qwen3, Llama, ...): `--tag` adds it.
HEAD_TAGS = ("speculative-decoding", "jetspec", "draft-head")
# Hub convention for repositories that ship `custom_generate/generate.py`.
CUSTOM_GENERATE_TAG = "custom_generate"


def require_card_extras() -> None:
    """Cards are Jinja templates: check for jinja2 (the `hub` extra) before anything is rendered or written."""
    require_extra("hub", "jinja2", purpose="Rendering a model card")


def template_text(name: str) -> str:
    """A card template shipped with the package, read as package data (works from wheels and zipped installs)."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def check_base_model_id(base_model: str) -> None:
    """A card's `base_model` is the Hub repo id of the target, never a local path (cards carry no local paths)."""
    if is_local_path(base_model):
        raise ValueError(
            f"base_model must be the Hub repo id of the target the head drafts for (e.g. 'Qwen/Qwen3-8B'), got "
            f"{base_model!r}, which is a local path: a card names its base model the way Hub users load it."
        )


def _render(card_data: ModelCardData, default_template: str, template: str | Path | None, **variables) -> ModelCard:
    if template is not None:
        return ModelCard.from_template(card_data, template_path=str(template), **variables)
    return ModelCard.from_template(card_data, template_str=template_text(default_template), **variables)


def head_card_data(
    config,
    *,
    base_model: str,
    license: str = "apache-2.0",
    custom_generate: bool = True,
    datasets: list[str] | None = None,
    language: str | list[str] | None = None,
    extra_tags: list[str] | None = None,
) -> ModelCardData:
    """The YAML metadata of a head's card."""
    tags = list(HEAD_TAGS)
    if not config.causal_head:
        tags.append("dflash")
    if custom_generate:
        tags.append(CUSTOM_GENERATE_TAG)
    tags += [tag for tag in extra_tags or [] if tag not in tags]
    return ModelCardData(
        library_name="transformers",
        base_model=base_model,
        pipeline_tag="text-generation",
        license=license,
        tags=tags,
        datasets=datasets,
        language=language,
    )


def render_head_card(
    config,
    *,
    base_model: str,
    generation_config=None,
    num_parameters: int | None = None,
    bench: str | Path | Mapping | None = None,
    training_args: str | Path | Mapping | None = None,
    training_data: str | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    custom_generate: bool = True,
    datasets: list[str] | None = None,
    language: str | list[str] | None = None,
    extra_tags: list[str] | None = None,
    template: str | Path | None = None,
) -> ModelCard:
    """Render the card of a draft head.

    Args:
        config: the head's config.
        generation_config: the head's generation config, where its tree defaults live.
        base_model: repo id of the target the head drafts for (card metadata `base_model`).
        num_parameters: the head's parameter count (see `count_safetensors_parameters`).
        bench: bench JSON (path or parsed) for the results table; `None` renders a placeholder note.
        training_args: the trainer's `training_args.json` (path or parsed), if any.
        training_data: free text describing the training data (the trainer does not record it).
        repo_id: the head's repository, used in the usage snippets (a placeholder when unknown).
        model_name: the card's title (default: the repo name).
        license: SPDX-style license id for the metadata.
        custom_generate: whether the repository ships `custom_generate/` (adds the no-install snippet and tag).
        datasets, language, extra_tags: more metadata.
        template: another template file instead of the shipped `templates/draft_head.md.j2`.
    """
    require_card_extras()
    check_base_model_id(base_model)
    card_data = head_card_data(
        config, base_model=base_model, license=license, custom_generate=custom_generate, datasets=datasets,
        language=language, extra_tags=extra_tags,
    )
    head = describe_head(config, num_parameters, generation_config)
    repo = repo_id or "path/to/this/head"
    return _render(
        card_data,
        HEAD_TEMPLATE,
        template,
        model_name=model_name or (repo_id.split("/")[-1] if repo_id else f"{head['kind_name'].split()[0]} draft head"),
        repo_id=repo,
        repo_id_known=repo_id is not None,
        base_model=base_model,
        head=head,
        custom_generate=custom_generate,
        training=summarize_training(read_json(training_args)),
        training_data=training_data,
        results=summarize_bench(read_json(bench)),
        max_new_tokens=256,
    )


def render_causal_lm_card(
    config,
    *,
    num_parameters: int | None = None,
    role: str | None = None,
    description: str | None = None,
    training_args: str | Path | Mapping | None = None,
    training_data: str | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    language: str | list[str] | None = None,
    extra_tags: list[str] | None = None,
    template: str | Path | None = None,
) -> ModelCard:
    """Render the card of a plain causal LM (e.g. a small target, or a draft LM for stock assisted decoding).

    Args:
        config: the model's config.
        role: what the model is for, in a few words (e.g. "target" or "draft LM for assisted decoding").
        description: free text shown under the title.
        The other arguments mean what they mean for `render_head_card`.
    """
    require_card_extras()
    tags = [tag for tag in [getattr(config, "model_type", None), *(extra_tags or [])] if tag]
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        pipeline_tag="text-generation",
        license=license,
        tags=list(dict.fromkeys(tags)) or None,
        datasets=datasets,
        language=language,
    )
    return _render(
        card_data,
        CAUSAL_LM_TEMPLATE,
        template,
        model_name=model_name or (repo_id.split("/")[-1] if repo_id else "Causal language model"),
        repo_id=repo_id or "path/to/this/model",
        role=role,
        description=description,
        model=describe_causal_lm(config, num_parameters),
        training=summarize_training(read_json(training_args)),
        training_data=training_data,
    )


__all__ = [
    "CAUSAL_LM_TEMPLATE",
    "HEAD_TEMPLATE",
    "check_base_model_id",
    "head_card_data",
    "render_causal_lm_card",
    "render_head_card",
    "require_card_extras",
    "template_text",
]
