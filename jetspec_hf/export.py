"""`jetspec-hf export`: write a head in the released checkpoint format or in vLLM's `speculators` layout.

SGLang and vLLM (`DFLASH` speculative decoding) and the JetSpec engine load draft heads in the layout the published
JetSpec / DFlash heads use. `head.save_pretrained(folder, checkpoint_format="released")` writes it; this command
does the same from a folder or repo id. `--format speculators` writes the DFlash layout of the `speculators`
library instead (`checkpoint_format="speculators"`, see `jetspec_hf.speculators_format`), which needs the target.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Write a draft head (in any format this package loads, from a folder or a Hub repo id) as a folder in the released
checkpoint format: config.json with model_type qwen3, architectures [DFlashDraftModel], block_size,
num_target_layers and dflash_config, and model.safetensors with the released weight names. Serving engines load
that folder as the draft model (see the README, "Serving engines"). With --format speculators, the folder is in the
DFlash layout of vLLM's speculators library instead (speculators_model_type dflash, transformer_layer_config, the
draft vocabulary as d2t / t2d with the target's lm_head rows): it needs --target.
"""

EPILOG = """\
examples:
  jetspec-hf export --head runs/head --output exports/qwen3-8b-jetspec
  python -m sglang.launch_server --model-path Qwen/Qwen3-8B --speculative-algorithm DFLASH \\
      --speculative-draft-model-path exports/qwen3-8b-jetspec
  jetspec-hf export --head runs/head --output exports/qwen3-8b-speculators --format speculators --target Qwen/Qwen3-8B
"""


# What each engine does with an exported head, as read from its loader. vLLM decides each draft layer's mask from a
# top-level `is_causal`, else `dflash_config.causal`, else only sliding-window layers are causal (export writes both
# keys); SGLang's DFlash draft model attends bidirectionally in every full-attention layer whatever the config says.
ENGINE_NOTES = {
    "vllm": ("verifies a chain of block_size - 1 drafted tokens", True),
    "sglang": ("verifies a chain of block_size - 1 drafted tokens", False),
    "jetspec": ("verifies a tree", True),
}


def engine_report(engine: str, causal: bool) -> tuple[str, bool]:
    """(what `engine` will do with a head, whether that differs from how the head was trained)."""
    runs, keeps_causal = ENGINE_NOTES[engine]
    if not causal:
        return f"{engine} {runs}, with the bidirectional block mask the head was trained with", False
    if keeps_causal:
        return f"{engine} {runs}, with the causal block mask the head was trained with", False
    return (f"{engine} {runs} and attends BIDIRECTIONALLY inside the block whatever the config says, but this head "
            "was trained with a causal mask: its drafts there will be accepted less often than here. Serve it with "
            "vLLM or the JetSpec engine to keep its mask, or train a bidirectional (--bidirectional) head for "
            "SGLang", True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `jetspec-hf export`."""
    parser = argparse.ArgumentParser(
        prog="jetspec-hf export", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--head", required=True, metavar="FOLDER_OR_REPO", help="the draft head to export")
    parser.add_argument("--output", required=True, type=Path, metavar="DIR", help="the folder to write")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="dtype of the written weights; auto keeps the head's own")
    parser.add_argument("--format", choices=("released", "speculators"), default="released",
                        help="released (default): the published heads' layout, for SGLang, vLLM and the JetSpec "
                        "engine; speculators: the DFlash layout of vLLM's speculators library (needs --target)")
    parser.add_argument("--target", metavar="NAME_OR_FOLDER", default=None,
                        help="the target the head was trained for (a folder, Hub id, .gguf file or "
                        "smollm2-135m-instruct); --format speculators stores its lm_head rows of the draft "
                        "vocabulary and names it as the verifier")
    parser.add_argument("--engine", choices=tuple(ENGINE_NOTES), default=None,
                        help="the engine that will serve the head (released format): the command says how that "
                        "engine will run it (chain or tree) and warns when it will not use the block mask the head "
                        "was trained with")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into --output even when it already holds files (they may be replaced)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `jetspec-hf export`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        parser.error(f"--output {args.output} already holds files; pass --overwrite to write into it anyway")
    if args.format == "speculators":
        if args.target is None:
            parser.error("--format speculators needs --target: the layout stores the target's lm_head rows of the "
                         "draft vocabulary and names the target as the verifier")
        if args.engine is not None:
            parser.error("--engine describes the released format's engines; with --format speculators the command "
                         "says how speculators and vLLM run the head")
    elif args.target is not None:
        parser.error("--target is used by --format speculators only")

    from .modeling_jetspec import JetSpecDraftModel

    head = JetSpecDraftModel.from_pretrained(args.head, dtype=args.dtype)
    if args.format == "speculators":
        return export_speculators(head, args)
    head.save_pretrained(args.output, checkpoint_format="released")
    config = head.config
    print(f"wrote {args.output} (released format: block_size {config.block_size}, tapped target layers "
          f"{config.target_layer_ids}, {'causal' if config.causal_head else 'bidirectional'} block mask)")
    if config.draft_vocab_size is not None:
        print(f"note: the head's draft vocabulary ({config.draft_vocab_size} tokens) is not part of the released "
              "format; engines rank the target's whole vocabulary with it (output is unchanged, drafting costs more)")
    if args.engine is not None:
        message, differs = engine_report(args.engine, config.causal_head)
        print(("WARNING: " if differs else "") + message, file=sys.stderr if differs else sys.stdout)
    return 0


def export_speculators(head, args) -> int:
    """Write `head` in speculators' layout for the target `--target`, and say what changes there."""
    from .speculators_format import export_notes
    from .targets import load_target

    # A local folder is named by its absolute path: speculators reloads the embeddings from the verifier's name.
    target_name = str(Path(args.target).resolve()) if Path(args.target).is_dir() else args.target
    target, _ = load_target(target_name)
    head.save_pretrained(args.output, checkpoint_format="speculators", target=target)
    config = head.config
    vocabulary = (f"a draft vocabulary of {config.draft_vocab_size} tokens as d2t / t2d"
                  if config.draft_vocab_size not in (None, config.vocab_size) else "the whole vocabulary")
    print(f"wrote {args.output} (speculators layout: block_size {config.block_size}, aux_hidden_state_layer_ids "
          f"{[index + 1 for index in config.target_layer_ids]}, {vocabulary}, verifier {target.name_or_path})")
    for message, is_warning in export_notes(config, target.config.get_text_config().num_hidden_layers):
        print(("WARNING: " if is_warning else "note: ") + message, file=sys.stderr if is_warning else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
