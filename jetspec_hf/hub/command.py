"""`jetspec-hf card`: render a model card for a folder, prepare a Hub-ready copy, optionally push it."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..extras import MissingExtraError, require_extra
from .files import CARD_FILE, TRAINING_RECORD_FILES, is_draft_head_folder, repository_files

DESCRIPTION = """\
Render the model card (README.md) of a draft head or of a plain causal LM folder, into a Hub-ready copy of the
folder (--output DIR) or into the folder itself (--in-place).

For a draft head, the copy gets the weights and config (re-saved in jetspec_hf's format), a custom_generate/
folder (so that users without jetspec_hf can run `target.generate(..., custom_generate=<repo>,
trust_remote_code=True)`) and the bench JSON; the head must fit --base-model, and the bench JSON must be about
this head. A copy holds only what a model repository needs (no checkpoints, optimizer states or logs), and
--push-to uploads only those files. Existing files are never replaced without --overwrite.
"""

EPILOG = """\
examples:
  jetspec-hf bench --target Qwen/Qwen3-8B --head runs/head --output-dir runs/bench
  jetspec-hf card --folder runs/head --base-model Qwen/Qwen3-8B --bench-json runs/bench/benchmark.json \\
      --output hub/Qwen3-8B-jetspec --repo-id me/Qwen3-8B-jetspec
  jetspec-hf card --folder runs/head --base-model Qwen/Qwen3-8B --output hub/Qwen3-8B-jetspec --overwrite \\
      --push-to me/Qwen3-8B-jetspec
  jetspec-hf card --folder jetspec_hf/bundled/models/target --role "bundled target" --output /tmp/target-card --print
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `jetspec-hf card`."""
    parser = argparse.ArgumentParser(
        prog="jetspec-hf card", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--folder", required=True, type=Path, help="a saved draft head or causal LM folder")
    parser.add_argument("--base-model", metavar="ORG/NAME",
                        help="Hub repo id of the target the head drafts for (required for a draft head)")
    parser.add_argument("--bench-json", type=Path, metavar="FILE",
                        help="a `jetspec-hf bench` report (benchmark.json) for the card's results table")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", type=Path, metavar="DIR", help="write a Hub-ready copy of --folder here")
    where.add_argument("--in-place", action="store_true",
                       help="write the card (and custom_generate/) into --folder itself; weights stay untouched")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files the output folder already holds, its README.md card included")
    parser.add_argument("--repo-id", metavar="ORG/NAME",
                        help="the repository the folder is meant for (card snippets, custom_generate/); "
                             "defaults to --push-to")
    parser.add_argument("--push-to", metavar="ORG/NAME",
                        help="upload the prepared folder (only the files a model repository needs) to this repository")
    parser.add_argument("--private", action="store_true", help="create the repository as private when pushing")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    parser.add_argument("--license", default="apache-2.0", help="license id for the card metadata")
    parser.add_argument("--model-name", help="the card's title")
    parser.add_argument("--training-data", metavar="TEXT", help="a description of the training data")
    parser.add_argument("--training-args", type=Path, metavar="FILE",
                        help=f"training record (default: the first of {', '.join(TRAINING_RECORD_FILES)} in --folder)")
    parser.add_argument("--role", help="causal LM folders: what the model is for (e.g. 'bundled target')")
    parser.add_argument("--tag", action="append", default=[], dest="tags", help="extra metadata tag (repeatable)")
    parser.add_argument("--no-custom-generate", action="store_true",
                        help="draft heads: do not write custom_generate/")
    parser.add_argument("--print", action="store_true", dest="print_card", help="also print the card")
    return parser


def _card_settings(args: argparse.Namespace, repo_id: str | None) -> dict:
    """What both kinds of card take from the command line."""
    return dict(repo_id=repo_id, model_name=args.model_name, license=args.license,
                training_data=args.training_data, base_model=args.base_model)


def _causal_lm_card(args: argparse.Namespace, output: Path, repo_id: str | None) -> None:
    """A plain causal LM's card, in a copy of its repository files (or in place)."""
    from transformers import AutoConfig

    from .card_facts import count_safetensors_parameters
    from .cards import render_causal_lm_card
    from .files import find_training_record

    card = render_causal_lm_card(
        AutoConfig.from_pretrained(args.folder),
        num_parameters=count_safetensors_parameters(args.folder),
        role=args.role,
        training_args=args.training_args or find_training_record(args.folder),
        extra_tags=args.tags,
        **_card_settings(args, repo_id),
    )
    if not args.in_place:
        for name in repository_files(args.folder):
            (output / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.folder / name, output / name)
    card.save(output / CARD_FILE)


def _existing_causal_lm_files(args: argparse.Namespace, output: Path) -> list[str]:
    names = [CARD_FILE] + ([] if args.in_place else repository_files(args.folder))
    return [name for name in dict.fromkeys(names) if (output / name).exists()]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `jetspec-hf card`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not (args.folder / "config.json").is_file():
        parser.error(f"--folder {args.folder}: no config.json there")
    if args.repo_id and args.push_to and args.repo_id != args.push_to:
        parser.error(f"--repo-id {args.repo_id} and --push-to {args.push_to} name different repositories")
    repo_id = args.repo_id or args.push_to
    output = args.folder if args.in_place else args.output
    is_head = is_draft_head_folder(args.folder)
    if is_head and not args.base_model:
        parser.error("--base-model is required for a draft head (the Hub repo id of its target)")
    try:
        require_extra("hub", "jinja2", purpose="Rendering a model card")
    except MissingExtraError as error:
        parser.error(str(error))

    # Loads torch: only once the arguments are known to be usable.
    from .folder import prepare_hub_folder
    from .push import push_head_to_hub

    if is_head:
        try:
            prepare_hub_folder(
                args.folder,
                output,
                bench_json=args.bench_json,
                training_args=args.training_args,
                custom_generate=not args.no_custom_generate,
                tags=args.tags,
                overwrite=args.overwrite,
                **_card_settings(args, repo_id),
            )
        except (FileExistsError, ValueError) as error:
            parser.error(str(error))
    else:
        existing = _existing_causal_lm_files(args, output)
        if existing and not args.overwrite:
            parser.error(f"{output} already holds {', '.join(existing)}: pass --overwrite to replace them")
        output.mkdir(parents=True, exist_ok=True)
        _causal_lm_card(args, output, repo_id)

    card_path = output / CARD_FILE
    print(f"wrote {card_path}")
    if args.print_card:
        print(card_path.read_text(encoding="utf-8"))
    if args.push_to:
        try:
            commit = push_head_to_hub(output, args.push_to, private=args.private or None, revision=args.revision)
        except ValueError as error:
            print(f"jetspec-hf card: error: {error}", file=sys.stderr)
            return 1
        print(f"pushed {output} to {args.push_to}: {getattr(commit, 'commit_url', commit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
