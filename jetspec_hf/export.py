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
    return 0


if __name__ == "__main__":
    sys.exit(main())
