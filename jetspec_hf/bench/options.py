"""Command-line options of `jetspec-hf bench`, and how unset model paths fall back to the bundled pair.

This module imports neither torch nor transformers: `--help` and every argument error answer at once, before the
seconds those imports take.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bundled import BUNDLED_MODELS, BUNDLED_PROMPTS, SMOLLM2_HEADS, SMOLLM2_PROMPTS
from ..dtypes import DTYPE_NAMES
from ..extras import is_installed
from ..prompts import PROMPT_FIELDS

# Method groups that `--methods` selects; plain decoding always runs, as the reference. `tree` is the node-level
# tree at fixed budgets, `auto` the node-level tree with `tree_budget="auto"`, `fanout` the published reference's full
# fan-out, `hybrid` the node-level tree plus a prompt-lookup branch, `compiled` plain decoding and node-level trees
# with a static cache and compiled forwards, `grammar-blind` (with --json-schema only) node-level trees that do not
# see the grammar (the per-token path every other grammar library gets).
METHOD_GROUPS = (
    "assisted", "lookup", "hf-dflash", "chain", "tree", "auto", "fanout", "hybrid", "dflash-tree", "compiled",
    "grammar-blind",
)
# Not run unless asked for: compiling takes minutes on a CPU.
DEFAULT_METHOD_GROUPS = tuple(group for group in METHOD_GROUPS if group != "compiled")
# The defaults when no --target is given: the bundled pair and prompts, shipped as package data.
BUNDLED = {
    "target": BUNDLED_MODELS / "target",
    "head": BUNDLED_MODELS / "jetspec_head",
    "dflash_head": BUNDLED_MODELS / "dflash_head",
    "draft_lm": BUNDLED_MODELS / "draft_lm",
}
# The real pair: `--target smollm2-135m-instruct` alone takes the heads trained for it and its chat prompts.
SMOLLM2 = {"head": SMOLLM2_HEADS / "jetspec", "dflash_head": SMOLLM2_HEADS / "dflash", "dataset": SMOLLM2_PROMPTS}

DESCRIPTION = """\
Benchmark JetSpec tree decoding against plain greedy decoding and every peer a transformers user has, in one
process, on the same prompts, with the methods interleaved call by call (each keeps its fastest call per prompt):
plain generate(); HF assisted generation with a small draft LM; HF prompt lookup; transformers' built-in linear
DFlash path with the same head; the head as a chain; node-level trees, the published reference's full fan-out
trees, and node-level trees with a prompt-lookup branch (hybrid) at each budget; node-level trees with
tree_budget="auto" (the size chosen every round); and a bidirectional (DFlash) head through the same tree path.
Every method's output is checked token for token against plain greedy output; any difference is reported and
makes the command exit non-zero.

Without --target, the bundled models under jetspec_hf/bundled/models/ are used (target, jetspec_head, and dflash_head /
draft_lm when present) with the bundled held-out prompts.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jetspec-hf bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    models = parser.add_argument_group("models (default: the bundled pair under jetspec_hf/bundled/models/)")
    models.add_argument("--target", help="Qwen3 target: a local folder or a Hub id available offline")
    models.add_argument("--head", help="JetSpec draft head for the target (required with --target)")
    models.add_argument("--dflash-head", help="optional bidirectional (DFlash) head, run through the same tree path")
    models.add_argument("--draft-lm", help="optional small causal LM for HF assisted generation")
    models.add_argument("--tokenizer", help="tokenizer folder (default: the target's)")

    prompts = parser.add_argument_group("prompts")
    prompts.add_argument(
        "--dataset",
        help="a JSONL file (one object a line with a prompt field), a ShareGPT JSON file (or `sharegpt`), a folder "
        "written by datasets' save_to_disk, or a datasets name loadable offline (default: the bundled held-out code "
        "prompts; with --target smollm2-135m-instruct, its held-out ShareGPT chat prompts)",
    )
    prompts.add_argument("--split", default="test", help="dataset split (datasets sources only; default: test)")
    prompts.add_argument("--field", help="record field holding the prompt (default: the first of "
                         f"{', '.join(PROMPT_FIELDS)})")
    prompts.add_argument("--samples", type=int, default=20, help="number of prompts (default: 20)")
    prompts.add_argument("--max-new-tokens", type=int, default=128, help="tokens generated per prompt (default: 128)")
    prompts.add_argument("--batch-size", type=int, default=1,
                         help="prompts per generate call, left-padded (default: 1); stock peers that take no "
                         "batch (assisted generation, prompt lookup) are reported as skipped")
    prompts.add_argument("--prompt-tokens", type=int, default=64,
                         help="plain text files (.txt) are cut into prompts of this many tokens (default: 64); a "
                         "long value measures long contexts, e.g. 3000")
    prompts.add_argument("--json-schema", metavar="FILE",
                         help="decode every method, plain included, under this JSON schema (compact JSON, through "
                         "xgrammar's HF processor, a fresh one per call); adds the grammar-blind trees")
    prompts.add_argument("--chat-template", action="store_true",
                         help="wrap each prompt as one user turn with the tokenizer's chat template (thinking off)")

    methods = parser.add_argument_group("methods")
    methods.add_argument("--methods", nargs="+", choices=METHOD_GROUPS, default=list(DEFAULT_METHOD_GROUPS),
                         help="which methods to run besides plain decoding, which always runs (default: all but "
                         "`compiled`, which compiles plain decoding's and the tree path's forwards with a static "
                         "cache: minutes of compiling on a CPU)")
    methods.add_argument("--budgets", nargs="+", type=int, default=[8, 16, 32, 64],
                         help="tree budgets, nodes per round with the root (default: 8 16 32 64)")
    methods.add_argument("--tree-width", type=int, help="children per expanded node (default: the head config's)")
    methods.add_argument("--tree-depth", type=int, help="maximum tree depth (default: the head config's, else B-1)")
    methods.add_argument("--draft-window", type=int,
                         help="also run the JetSpec head's node-level trees at each budget with draft_window set to "
                         "this (the head attends only the last positions of the context)")
    methods.add_argument("--prompt-lookup-tokens", type=int, default=10,
                         help="prompt_lookup_num_tokens for HF prompt lookup and the hybrid trees (default: 10)")

    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", help="torch device (default: cuda when available, else cpu)")
    run.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default="float32",
                     help="weights and activations dtype (default: float32; greedy output is only guaranteed "
                     "identical to plain decoding in float32)")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    run.add_argument("--warmup", type=int, default=1, help="untimed runs of each method on the first prompt (default: 1)")
    run.add_argument("--repeats", type=int, default=1,
                     help="timed runs per prompt and method, the fastest kept: steadier numbers on a busy machine "
                     "(default: 1)")
    run.add_argument("--profile-samples", type=int,
                     help="prompts in the separate profiled pass of each tree method (default: all; 0 = no "
                     "per-round breakdown)")
    run.add_argument("--output-dir", default="bench_results", help="where benchmark.json and benchmark.png go")
    run.add_argument("--allow-mismatch", action="store_true",
                     help="report outputs that differ from plain greedy but exit 0 (for bf16/fp16 runs, where "
                     "near-tie argmax flips are expected)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--synthetic", action="store_true",
                     help="instead: a hardware check on random weights at Qwen3-8B shapes with τ forced by an oracle "
                     "drafter, no download (its own options: jetspec-hf bench --synthetic --help)")
    return parser


def resolve_model_paths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill unset model paths and check every argument, before anything heavy is imported: the bundled pair when
    no --target is given; the SmolLM2 heads and chat prompts for `--target smollm2-135m-instruct`; otherwise
    --head is required."""
    from ..targets import SMOLLM2_NAME

    if args.target is None and any(getattr(args, name) for name in ("head", "dflash_head", "draft_lm")):
        parser.error("--head, --dflash-head and --draft-lm need --target (a head drafts for the target it was "
                     "trained for); give --target too, or none of them for the bundled pair")
    if args.target is not None and args.target.lower() == SMOLLM2_NAME:
        if args.head is None and not SMOLLM2["head"].exists():
            parser.error(f"no --head given and the package ships no head for {SMOLLM2_NAME} ({SMOLLM2['head']})")
        args.head = args.head or str(SMOLLM2["head"])
        if args.dflash_head is None and SMOLLM2["dflash_head"].exists():
            args.dflash_head = str(SMOLLM2["dflash_head"])
        args.dataset = args.dataset or str(SMOLLM2["dataset"])
        args.chat_template = True  # an instruction-tuned chat model: prompts are user turns
    if args.target is None:
        if not BUNDLED["target"].exists() or not BUNDLED["head"].exists():
            parser.error(
                f"no --target given and the bundled models are missing ({BUNDLED['target']}, {BUNDLED['head']}); "
                "pass --target and --head"
            )
        args.target = str(BUNDLED["target"])
        args.head = args.head or str(BUNDLED["head"])
        # Optional bundled models are used when they exist; passing a path explicitly still wins.
        if args.dflash_head is None and BUNDLED["dflash_head"].exists():
            args.dflash_head = str(BUNDLED["dflash_head"])
        if args.draft_lm is None and BUNDLED["draft_lm"].exists():
            args.draft_lm = str(BUNDLED["draft_lm"])
    elif args.head is None:
        parser.error("--head is required with --target")
    args.dataset = args.dataset or str(BUNDLED_PROMPTS)
    _check_source(args.dataset, parser)
    for name in ("target", "head", "dflash_head", "draft_lm", "tokenizer"):
        value = getattr(args, name)
        if value and _looks_local(value) and not Path(value).exists():
            parser.error(f"--{name.replace('_', '-')} {value}: no such file or folder")
    if args.json_schema is not None:
        if not Path(args.json_schema).is_file():
            parser.error(f"--json-schema {args.json_schema}: no such file")
        if not is_installed("xgrammar"):
            parser.error("--json-schema needs xgrammar: pip install xgrammar (or 'jetspec_hf[clients]')")
    if args.draft_window is not None and args.draft_window < 1:
        parser.error("--draft-window must be >= 1")
    for name in ("samples", "max_new_tokens", "prompt_lookup_tokens", "repeats", "batch_size", "prompt_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(budget < 1 for budget in args.budgets):
        parser.error("--budgets must all be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")


def _looks_local(value: str) -> bool:
    """A path rather than a Hub id or a name: it starts like one, or has more than one `/`."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or value.endswith((".gguf", ".jsonl", ".json"))


def _check_source(source: str, parser: argparse.ArgumentParser) -> None:
    from ..conversations import SHAREGPT_NAME

    if source != SHAREGPT_NAME and _looks_local(source) and not Path(source).exists():
        parser.error(f"--dataset {source}: no such file or folder")


def describe_run(args: argparse.Namespace) -> str:
    """One line saying what the run will do, printed before it starts."""
    groups = ", ".join(args.methods)
    models = f"target {args.target}, head {args.head}" + (f", DFlash head {args.dflash_head}" if args.dflash_head
                                                         else "")
    if args.json_schema:
        models += f"; under the JSON schema {args.json_schema}"
    return (f"jetspec-hf bench: {models}; {args.samples} prompts from {args.dataset} x {args.max_new_tokens} new "
            f"tokens (batches of {args.batch_size}); plain decoding and {groups}; budgets "
            f"{' '.join(map(str, args.budgets))}; {args.repeats} timed run(s) per prompt and method, interleaved")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_model_paths(args, parser)
    return args


__all__ = ["BUNDLED", "DEFAULT_METHOD_GROUPS", "METHOD_GROUPS", "build_parser", "describe_run", "parse_args",
           "resolve_model_paths"]
