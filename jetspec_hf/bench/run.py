"""`jetspec-hf bench`: load, run every method in turn, profile the tree path, report, and fail on any mismatch."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch

from ..generation import enable
from ..log import progress_bar
from .loading import (
    DTYPES,
    REPO_ROOT,
    describe_environment,
    head_weights_fingerprint,
    load_models,
    require_bench_extras,
)
from .measure import MethodResult, profile_method, run_interleaved
from .methods import MethodSettings, build_methods
from .options import describe_run
from .plot import plot_report
from .prompts import batch_prompts, encode_prompts, load_prompts
from .report import breakdown_table, method_row, methods_table, round_breakdown, write_json

REPORT_NAME = "benchmark"


def json_schema_processors(models, schema_path: str):
    """A maker of fresh xgrammar processors for the JSON schema in `schema_path` (compiled once, compact JSON:
    no free whitespace between tokens of the structure)."""
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(models.tokenizer, vocab_size=models.target.config.vocab_size)
    compiled = xgrammar.GrammarCompiler(info).compile_json_schema(Path(schema_path).read_text(), any_whitespace=False)
    return lambda: [xgrammar.contrib.hf.LogitsProcessor(compiled)]


def _log(message: str) -> None:
    # Progress notes go to stderr so that stdout carries only the Markdown report.
    print(message, file=sys.stderr, flush=True)


def _display_path(path: str | None) -> str | None:
    """Paths inside the repository are reported relative to it, so that a committed report names the bundled
    models the same way on every checkout."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    if resolved.is_relative_to(REPO_ROOT):
        return str(resolved.relative_to(REPO_ROOT))
    return path


def _pad_token_id(models) -> int:
    """What batches are left-padded with: the target's pad token (its EOS when it has none, as `generate` does)."""
    config = models.target.generation_config
    for value in (config.pad_token_id, config.eos_token_id, models.tokenizer.pad_token_id):
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def _summary_line(result: MethodResult) -> str:
    if result.skipped_reason is not None:
        return f"  {result.method.name}: skipped ({result.skipped_reason.strip().splitlines()[0]})"
    tau = f"τ={result.tau:.2f}, " if result.tau is not None else ""
    verdict = "matches plain" if not result.mismatches else f"{len(result.mismatches)} MISMATCHES"
    return f"  {result.method.name}: {tau}{result.tokens_per_second:.1f} tok/s, {verdict}"


def run_benchmark(args) -> tuple[dict, list[MethodResult]]:
    """Run every configured method on the prompt set and build the JSON report (see the package doc)."""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run_benchmark(args)
    finally:
        # The thread count is process-wide; a caller that runs the benchmark in-process gets its own back.
        torch.set_num_threads(threads)


def _run_benchmark(args) -> tuple[dict, list[MethodResult]]:
    torch.manual_seed(args.seed)
    progress = not args.no_progress
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)

    _log(f"loading models on {device} ({args.dtype})")
    models = load_models(
        args.target, args.head, args.dflash_head, args.draft_lm, args.tokenizer, args.device, DTYPES[args.dtype]
    )
    enable(models.target)
    texts = load_prompts(args.dataset, args.split, args.field, args.samples, tokenizer=models.tokenizer,
                         prompt_tokens=args.prompt_tokens)
    encoded = encode_prompts(models.tokenizer, texts, args.chat_template, device)
    prompts = batch_prompts(encoded, args.batch_size, _pad_token_id(models))
    settings = MethodSettings(
        max_new_tokens=args.max_new_tokens,
        budgets=tuple(args.budgets),
        tree_width=args.tree_width,
        tree_depth=args.tree_depth,
        prompt_lookup_tokens=args.prompt_lookup_tokens,
        groups=tuple(args.methods),
        draft_window=args.draft_window,
        processors=None if args.json_schema is None else json_schema_processors(models, args.json_schema),
    )
    methods = build_methods(models, settings)
    _log(f"{len(encoded)} prompts (batches of {args.batch_size}) × {args.max_new_tokens} new tokens, "
         f"{len(methods)} methods")

    # One bar over every generate call of the run, so that the whole benchmark has an ETA.
    profile_count = len(prompts) if args.profile_samples is None else min(args.profile_samples, len(prompts))
    runnable = [method for method in methods if method.skipped_reason is None]
    calls = len(runnable) * (args.warmup + len(prompts) * args.repeats)
    calls += profile_count * sum(method.is_tree for method in runnable)
    overall = progress_bar(total=calls, desc="benchmark", unit="call", disable=not progress, position=0)

    # Methods interleaved call by call on each prompt; plain decoding's outputs are the reference.
    results = run_interleaved(methods, prompts, models.target, args.warmup, args.repeats, overall)
    plain = results[0]
    for result in results:
        _log(_summary_line(result))

    breakdown = {"unit": "milliseconds per round", "samples": 0, "methods": {}}
    if profile_count > 0:
        breakdown["samples"] = profile_count
        for result in results:
            if result.method.is_tree and result.skipped_reason is None:
                profiler = profile_method(result.method, prompts[:profile_count], progress, overall)
                breakdown["methods"][result.method.name] = round_breakdown(result.method, profiler, profile_count)
    overall.close()

    report = {
        "environment": describe_environment(args.device, args.dtype),
        "target": _display_path(args.target),
        "head": _display_path(args.head),
        "dflash_head": _display_path(args.dflash_head),
        # Which weights were measured: a model card refuses results recorded for other weights.
        "head_fingerprint": head_weights_fingerprint(args.head),
        "dflash_head_fingerprint": head_weights_fingerprint(args.dflash_head),
        "draft_lm": _display_path(args.draft_lm),
        "prompts": {
            "source": _display_path(args.dataset),
            "samples": len(encoded),
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "chat_template": args.chat_template,
            "json_schema": _display_path(args.json_schema),
            "mean_prompt_tokens": round(sum(ids.shape[1] for ids in encoded) / len(encoded), 1),
        },
        "settings": {"budgets": list(args.budgets), "tree_width": args.tree_width, "tree_depth": args.tree_depth,
                     "warmup": args.warmup, "repeats": args.repeats, "prompt_lookup_tokens": args.prompt_lookup_tokens,
                     "draft_window": args.draft_window},
        "methods": [method_row(result, plain) for result in results],
        "round_breakdown": breakdown,
    }
    return report, results


def main(argv: list[str] | None = None) -> int:
    """`jetspec_hf.bench.main` (kept here for callers of this module)."""
    from . import main as bench_main

    return bench_main(argv)


def execute(args, argv: list[str]) -> int:
    """Run the benchmark that the checked `args` describe, print and write its report; returns the exit status."""
    require_bench_extras(args.dataset)
    _log(describe_run(args))
    report, results = run_benchmark(args)
    report["command"] = shlex.join(["jetspec-hf", "bench", *argv])

    print(methods_table(report["methods"]))
    if report["round_breakdown"]["methods"]:
        print()
        print(f"Per-round time, ms (profiled pass over {report['round_breakdown']['samples']} prompts):")
        print()
        print(breakdown_table(report["round_breakdown"]))

    output_dir = Path(args.output_dir)
    json_path, png_path = output_dir / f"{REPORT_NAME}.json", output_dir / f"{REPORT_NAME}.png"
    write_json(report, json_path)
    title = f"{Path(args.target).name}: {len(results[0].outputs)} prompts × {args.max_new_tokens} tokens, " \
            f"{args.device} {args.dtype}"
    plot_report(report["methods"], png_path, title=title)
    _log(f"wrote {json_path} and {png_path}")

    failed = [result for result in results if result.mismatches]
    for result in failed:
        _log(f"MISMATCH: {result.method.name} differs from plain greedy decoding on {len(result.mismatches)} "
             f"prompt(s); first: {result.mismatches[0].describe()}")
    if failed and not args.allow_mismatch:
        _log("FAILED: outputs must equal plain greedy output token for token (see above).")
        return 1
    return 0


__all__ = ["execute", "main", "run_benchmark"]
