"""`jetspec-hf export`: write a head in the released checkpoint format, for serving engines.

SGLang and vLLM (`DFLASH` speculative decoding) and the JetSpec engine load draft heads in the layout the published
JetSpec / DFlash heads use. `head.save_pretrained(folder, checkpoint_format="released")` writes it; this command
does the same from a folder or repo id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Write a draft head (this package's format or the released one, from a folder or a Hub repo id) as a folder in the
released checkpoint format: config.json with model_type qwen3, architectures [DFlashDraftModel], block_size,
num_target_layers and dflash_config, and model.safetensors with the released weight names. Serving engines load
that folder as the draft model (see the README, "Serving engines").
"""

EPILOG = """\
examples:
  jetspec-hf export --head runs/head --output exports/qwen3-8b-jetspec
  python -m sglang.launch_server --model-path Qwen/Qwen3-8B --speculative-algorithm DFLASH \\
      --speculative-draft-model-path exports/qwen3-8b-jetspec
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
    parser.add_argument("--engine", choices=tuple(ENGINE_NOTES), default=None,
                        help="the engine that will serve the head: the command says how that engine will run it "
                        "(chain or tree) and warns when it will not use the block mask the head was trained with")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into --output even when it already holds files (they may be replaced)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `jetspec-hf export`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        parser.error(f"--output {args.output} already holds files; pass --overwrite to write into it anyway")

    from .modeling_jetspec import JetSpecDraftModel

    head = JetSpecDraftModel.from_pretrained(args.head, dtype=args.dtype)
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


if __name__ == "__main__":
    sys.exit(main())
