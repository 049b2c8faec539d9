"""The `jetspec-hf` command: one subcommand per job, each implemented by its own module's `main(argv)`."""

from __future__ import annotations

import importlib
import sys

from .extras import MissingExtraError

# subcommand -> (module exposing `main(argv: list[str] | None) -> int | None`, one-line help)
SUBCOMMANDS = {
    "train": ("jetspec_hf.training.__main__", "train a draft head for a Qwen3 target"),
    "bench": ("jetspec_hf.bench", "benchmark the tree path against plain decoding and peers"),
    "card": ("jetspec_hf.hub", "render a model card / prepare a Hub-ready folder"),
    "export": ("jetspec_hf.export", "write a head for SGLang, vLLM and the JetSpec engine (released or speculators)"),
}


def _usage() -> str:
    lines = ["usage: jetspec-hf <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ["", "Run `jetspec-hf <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"jetspec-hf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    try:
        return int(module.main(rest) or 0)
    except MissingExtraError as error:
        # Raised before the command did any work: the install line is all the user needs.
        print(f"jetspec-hf {command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
