"""Command-line options of `jetspec-hf bench --synthetic`, with per-preset defaults."""

from __future__ import annotations

import argparse

import torch

from ..compilation import COMPILE_MODES
from ..loading import DTYPES
from .models import SHAPES

DESCRIPTION = """\
Hardware check of the tree loop on random weights at real shapes, with no download: a Qwen3-8B-shaped target and a
released-format 5-layer head built in memory on the device, and an oracle drafter that runs the real head forward
but plants the target's own greedy continuation in each tree so that any τ can be forced. Prints (and writes as
JSON and Markdown into --output-dir): plain step time, verify forward time / plain step for N nodes, draft time,
loop overhead per round, host syncs per round, and speed-up at each forced τ and budget, for each attention backend
and compile mode. Every generated sequence is checked token for token against plain greedy decoding.

--shapes 8b (default) is sized to finish within 5 minutes on one H200; --shapes tiny runs in seconds on a CPU.
"""

# Defaults that depend on the shapes: the 8B run is budgeted for 5 minutes on one H200 (see run.py for the
# expected split); the tiny one is what the tests run on a CPU.
PRESET_DEFAULTS = {
    "8b": dict(dtype="bfloat16", prompt_tokens=512, max_new_tokens=160, warmup=2, repeats=7, time_limit=230.0),
    "tiny": dict(dtype="float32", prompt_tokens=32, max_new_tokens=48, warmup=1, repeats=3, time_limit=0.0),
}
ATTENTION_CHOICES = ("sdpa", "flash_attention_2", "eager")
DEFAULT_VERIFY_NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jetspec-hf bench --synthetic", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--synthetic", action="store_true", help=argparse.SUPPRESS)  # how this mode is chosen
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="8b",
                        help="model shapes: 8b (Qwen3-8B and its released heads; default) or tiny (for tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="weights dtype (default: bfloat16 for 8b, "
                        "float32 for tiny; greedy identity with plain decoding is guaranteed in float32 only)")
    parser.add_argument("--attention", nargs="+", choices=ATTENTION_CHOICES, default=["sdpa", "flash_attention_2"],
                        help="target attention backends to measure, each a variant (default: sdpa "
                        "flash_attention_2; one that cannot load here is reported as skipped)")
    parser.add_argument("--compile", nargs="+", choices=COMPILE_MODES,
                        help="compile modes, each a variant: none; static (a static cache and a compile_config: "
                        "generate compiles plain steps and tree verifies, as users get it); mlp (torch.compile of "
                        "the target's MLP blocks only; see jetspec_hf/bench/compilation.py) (default: none static "
                        "on cuda, none elsewhere)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default: inductor)")
    parser.add_argument("--taus", nargs="+", type=float, default=[2.0, 4.0, 6.0, 8.0],
                        help="forced τ, tokens committed per round (default: 2 4 6 8)")
    parser.add_argument("--budgets", nargs="+", type=int, default=[16, 64, 256],
                        help="tree budgets, nodes per round with the root (default: 16 64 256)")
    parser.add_argument("--verify-nodes", nargs="+", type=int, default=DEFAULT_VERIFY_NODES,
                        help="node counts of the verify-forward sweep (default: 1 2 4 ... 256)")
    parser.add_argument("--prompt-tokens", type=int, help="prompt length, the fixed prefix of the forward timings "
                        "(default: 512 for 8b, 32 for tiny)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per generate call (default: 160 / 48)")
    parser.add_argument("--warmup", type=int, help="untimed calls before each forward timing (default: 2 / 1)")
    parser.add_argument("--repeats", type=int, help="timed calls per forward timing, median kept (default: 7 / 3)")
    parser.add_argument("--time-limit", type=float, help="seconds after which no new measurement starts; those left "
                        "are reported as skipped (default: 230 for 8b, none for tiny; 0 = none)")
    parser.add_argument("--output-dir", default="bench_results",
                        help="where synthetic.json and synthetic.md go (rewritten after every measurement)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="report outputs that differ from plain greedy decoding but exit 0")
    return parser


def parse_synthetic_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse, fill the preset's defaults, and check ranges."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in PRESET_DEFAULTS[args.shapes].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.compile is None:
        args.compile = ["none", "static"] if torch.device(args.device).type == "cuda" else ["none"]
    for name in ("prompt_tokens", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_new_tokens < 2:
        parser.error("--max-new-tokens must be >= 2 (the first token comes from the prefill, before any round)")
    if args.warmup < 0 or args.time_limit < 0:
        parser.error("--warmup and --time-limit must be >= 0")
    if any(budget < 2 for budget in args.budgets):
        parser.error("--budgets must all be >= 2 (a 1-node tree drafts nothing)")
    if any(nodes < 1 for nodes in args.verify_nodes):
        parser.error("--verify-nodes must all be >= 1")
    if any(tau < 1 for tau in args.taus):
        parser.error("--taus must all be >= 1 (a round commits at least one token)")
    return args


__all__ = ["ATTENTION_CHOICES", "PRESET_DEFAULTS", "build_parser", "parse_synthetic_args"]
