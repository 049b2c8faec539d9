"""`jetspec-hf bench --synthetic`: the tree loop on random weights at real shapes, with τ forced by an oracle.

A hardware check that needs no download: `models` builds the target and head on the device, `oracle` forces each
round's acceptance, `timing` times forwards and generate calls, `host_syncs` counts host synchronisations per
round, the bench's `stage_events` splits a round's time without synchronising, its `compilation` applies
`--compile`, and `report` checks the goals and writes the tables.

Each variant (attention backend × compile mode) measures, in this order: plain greedy decoding (the reference every
tree run must reproduce token for token), forward timings at the prompt's prefix (prefill, plain step, verify at
each node count, draft), the host-sync count and a `RoundProfiler` pass (which synchronises per stage) at budget 64
and the feasible τ nearest 4, then every (budget, τ) run. The JSON and Markdown reports are rewritten
after every measurement, so a run cut short (by `--time-limit` or by a kill) keeps what it measured.

Expected split of the default 8B run on one H200 (estimates from a plain step of ~25 ms and a round of ~40 ms in
HF's eager, launch-bound forwards, not readings), against `--time-limit 230` (examples/gpu_check.sh stops the
process at 270 s):
  before the clock: imports and CUDA init ~15-20 s;
  building 8.2B + 1.1B random bf16 parameters on the GPU ~5 s;
  per variant ~45 s: plain reference of 160 tokens (+ a 16-token warm-up) ~5 s; forward timings (prefill, plain
  step, 9 node counts, draft; 9 calls each) ~5 s; 12 forced runs (4 τ × 3 budgets, 160 tokens each after a
  16-token warm-up) ~28 s; host-sync passes (reads, then CUDA's own count) and one profiled pass ~7 s;
  sdpa ~45 s; flash_attention_2 ~45 s, or nothing where flash-attn is not installed; then the compiled variants:
  torch.compile of the MLP blocks (three graphs) ~30-90 s, then ~45 s each. A variant or row the limit cuts off is
  reported as skipped.
"""

from __future__ import annotations

import shlex
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ...generation import enable
from ...generation.budget.measurement import measure_verify_costs
from ...generation.profiling import ROUND_STAGES, RoundProfiler
from ...generation.checks import check_target_supported
from ...generation.tree_attention import install_tree_attention
from ...generation.settings import resolve_tree_settings
from ..compilation import compiled
from .host_syncs import CudaSyncCounter, HostReadCounter, RoundSyncCounter
from ..loading import DTYPES, describe_environment
from ..methods import Method
from .oracle import acceptance_for_tau
from ..report import round_breakdown, write_json
from ..stage_events import EventRoundProfiler
from .timing import oracle_generation, plain_generation, time_forwards
from .models import SHAPES, build_head, build_target, synthetic_prompt
from .options import parse_synthetic_args
from .report import OVERHEAD_GOAL_BUDGET, goals, markdown

REPORT_NAME = "synthetic"
# Tokens of the untimed generate call before each timed one: enough rounds to run every code path once.
WARMUP_TOKENS = 16


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Clock:
    """Elapsed time, and whether `limit` seconds (0: none) have passed."""

    def __init__(self, limit: float):
        self.start = time.monotonic()
        self.limit = limit

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def out_of_time(self) -> str | None:
        """The reason to skip a measurement, or `None` when there is time left."""
        if self.limit and self.elapsed >= self.limit:
            return f"time limit ({self.limit:.0f} s) reached"
        return None


def _attention_unavailable(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if name != "flash_attention_2":
        return None
    from transformers.utils import is_flash_attn_2_available

    if device.type != "cuda":
        return "flash_attention_2 needs a CUDA device"
    if dtype not in (torch.float16, torch.bfloat16):
        return "flash_attention_2 needs float16 or bfloat16"
    if not is_flash_attn_2_available():
        return "flash-attn is not installed (pip install 'jetspec_hf[flash]')"
    return None


def _variant_name(attention: str, compile_mode: str) -> str:
    return attention if compile_mode == "none" else f"{attention} + compile({compile_mode})"


def _interpolated(timings: dict[int, float], nodes: float) -> float:
    """Verify ms at `nodes` nodes, linear between the measured node counts (clamped at the ends)."""
    points = sorted(timings.items())
    return float(np.interp(nodes, [count for count, _ in points], [ms for _, ms in points]))


class _Run:
    """One synthetic benchmark: the models, the prompt, and the report being filled."""

    def __init__(self, args, on_update):
        self.args = args
        self.on_update = on_update
        self.clock = _Clock(args.time_limit)
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.shapes = SHAPES[args.shapes]
        _log(f"building the {args.shapes} target and head on {self.device} ({args.dtype})")
        self.target = build_target(self.shapes, self.device, self.dtype, seed=args.seed)
        self.generation_settings: dict = {}  # what the current compile mode asks every generation to use
        self.head = build_head(self.shapes, self.target, seed=args.seed + 1)
        enable(self.target)
        self.prompt = synthetic_prompt(self.shapes, args.prompt_tokens, self.device, seed=args.seed)
        settings = resolve_tree_settings(self.head, {})
        self.width, self.depth = settings.width, settings.depth
        self.reference: list[int] | None = None  # the first variant's plain output: every run must reproduce it
        self.report = {
            "mode": "synthetic",
            "environment": describe_environment(args.device, args.dtype),
            "shapes": {"name": args.shapes, **self.shapes.describe(),
                       "target_parameters": sum(p.numel() for p in self.target.parameters()),
                       "head_parameters": sum(p.numel() for p in self.head.parameters()),
                       "target_layer_ids": self.head.config.target_layer_ids},
            "settings": {"prompt_tokens": args.prompt_tokens, "max_new_tokens": args.max_new_tokens,
                         "tree_width": self.width, "tree_depth": self.depth, "budgets": args.budgets,
                         "taus": args.taus, "verify_nodes": args.verify_nodes, "warmup": args.warmup,
                         "repeats": args.repeats, "time_limit": args.time_limit,
                         "compile_backend": args.compile_backend},
            "variants": [],
            "elapsed_seconds": 0.0,
        }
        self._publish()

    def _publish(self) -> None:
        self.report["elapsed_seconds"] = round(self.clock.elapsed, 1)
        self.report["goals"] = goals(self.report)
        if self.on_update is not None:
            self.on_update(self.report)

    def run(self) -> dict:
        for compile_mode in self.args.compile:
            for attention in self.args.attention:
                self._variant(attention, compile_mode)
        self._publish()
        return self.report

    def _variant(self, attention: str, compile_mode: str) -> None:
        variant = {"name": _variant_name(attention, compile_mode), "attention": attention, "compile": compile_mode,
                   "compiled": None, "skipped_reason": None, "failed": None}
        self.report["variants"].append(variant)
        variant["skipped_reason"] = (_attention_unavailable(attention, self.device, self.dtype)
                                     or self.clock.out_of_time())
        if variant["skipped_reason"] is not None:
            _log(f"{variant['name']}: skipped ({variant['skipped_reason']})")
            self._publish()
            return
        _log(f"[{self.clock.elapsed:5.0f} s] {variant['name']}")
        try:
            self.target.set_attn_implementation(attention)
            install_tree_attention()  # the newly chosen backend gets its tree routing
            check_target_supported(self.target)
            with compiled(self.target, compile_mode, self.args.compile_backend) as setup:
                variant["compiled"] = setup.description
                self.generation_settings = setup.generation_settings
                self._measure(variant)
        except Exception as error:  # noqa: BLE001 - one run on a lent machine: the other variants still run
            # Recorded as a failure (the command exits non-zero), with the traceback in the log.
            variant["failed"] = f"{type(error).__name__}: {error}".strip()
            _log(f"{variant['name']} FAILED:\n{traceback.format_exc()}")
        finally:
            self.target.set_attn_implementation("sdpa")
        self._publish()

    def _measure(self, variant: dict) -> None:
        args, target, prompt = self.args, self.target, self.prompt
        plain_generation(target, prompt, min(WARMUP_TOKENS, args.max_new_tokens), **self.generation_settings)
        plain = plain_generation(target, prompt, args.max_new_tokens, **self.generation_settings)
        new_tokens = plain.new_tokens(prompt.shape[1])
        if self.reference is None:
            self.reference = new_tokens
        continuation = plain.sequences
        variant["plain"] = {"seconds": round(plain.seconds, 4), "matches_reference": new_tokens == self.reference,
                            "ms_per_token": 1000.0 * plain.seconds / len(new_tokens)}
        self._publish()

        forwards = time_forwards(target, self.head, prompt, args.verify_nodes, self.width, self.depth,
                                 args.warmup, args.repeats)
        # A plain step as plain `generate` runs it: the call's time after its prefill, per token after the first
        # (which the prefill's own logits give).
        step_ms = (1000.0 * plain.seconds - forwards.prefill) / max(len(new_tokens) - 1, 1)
        variant["plain"].update(forward_ms=forwards.plain_step, step_ms=step_ms, prefill_ms=forwards.prefill)
        variant["verify"] = [{"nodes": nodes, "ms": ms, "over_plain_forward": ms / forwards.plain_step}
                             for nodes, ms in forwards.verify.items()]
        variant["draft_ms"] = forwards.draft
        variant["forced"] = []
        variant["auto_costs"] = None
        if variant["compile"] == "none" and self.clock.out_of_time() is None:
            variant["auto_costs"] = self._auto_costs()
        self._publish()

        variant["host_syncs"] = variant["synced_profile"] = None
        budget = OVERHEAD_GOAL_BUDGET if OVERHEAD_GOAL_BUDGET in args.budgets else args.budgets[0]
        feasible = [tau for tau in args.taus if self._feasible(budget, tau)]
        if feasible and self.clock.out_of_time() is None:
            tau = min(feasible, key=lambda value: abs(value - 4.0))
            variant["host_syncs"] = self._host_syncs(budget, tau, continuation)
            self._publish()
            variant["synced_profile"] = self._synced_profile(budget, tau, continuation)
        self._publish()

        for budget in args.budgets:
            for tau in args.taus:
                variant["forced"].append(self._forced(budget, tau, continuation, variant["plain"], forwards.verify))
                self._publish()

    def _auto_costs(self) -> dict:
        """The verify table `tree_budget="auto"` measures on its first call (`budget/measurement.py`), and how long
        that took on this machine."""
        started = time.perf_counter()
        costs = measure_verify_costs(self.target, self.head.config.target_layer_ids, self.device, self.depth + 1)
        seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 3), "node_counts": list(costs.node_counts),
                "prefix_lengths": list(costs.prefix_lengths),
                "ms": [[round(1000.0 * value, 3) for value in row] for row in costs.seconds]}

    def _feasible(self, budget: int, tau: float) -> bool:
        return tau <= 1 + min(self.depth, budget - 1)

    def _acceptance(self, budget: int, tau: float) -> float:
        return acceptance_for_tau(tau, min(self.depth, budget - 1))

    def _forced(self, budget: int, tau: float, continuation, plain: dict, verify_ms: dict) -> dict:
        row = {"budget": budget, "tau_target": tau, "skipped_reason": None}
        if not self._feasible(budget, tau):
            row["skipped_reason"] = f"a {budget}-node tree accepts at most {min(self.depth, budget - 1)} tokens"
            return row
        row["skipped_reason"] = self.clock.out_of_time()
        if row["skipped_reason"] is not None:
            return row
        args, acceptance = self.args, [self._acceptance(budget, tau)]
        oracle_generation(self.target, self.head, self.prompt, continuation, budget, acceptance,
                          min(WARMUP_TOKENS, args.max_new_tokens), seed=args.seed,
                          generation_settings=self.generation_settings)
        profiler = EventRoundProfiler()
        run = oracle_generation(self.target, self.head, self.prompt, continuation, budget, acceptance,
                                args.max_new_tokens, round_profiler=profiler, seed=args.seed,
                          generation_settings=self.generation_settings)
        new_tokens = run.new_tokens(self.prompt.shape[1])
        rounds = len(run.accepted_lengths)
        tau_measured = sum(run.accepted_lengths) / rounds
        mean_tree_size = sum(run.tree_sizes) / rounds
        stages = round_breakdown(
            Method(name="oracle", kind="jetspec-tree", head="oracle", tree_budget=budget, tree_width=self.width),
            profiler, 1,
        )
        verify_forward = _interpolated(verify_ms, mean_tree_size)
        bound = tau_measured * plain["step_ms"] / verify_forward
        speedup = plain["seconds"] / run.seconds
        overhead = stages["round"] - stages["verify"]
        row.update(
            acceptance=round(acceptance[0], 4),
            tau=tau_measured,
            rounds=rounds,
            mean_tree_size=round(mean_tree_size, 2),
            ms_per_token=1000.0 * run.seconds / len(new_tokens),
            speedup=speedup,
            verify_forward_ms=verify_forward,
            bound=bound,
            speedup_over_bound=speedup / bound,
            round_ms=stages["round"],
            verify_ms=stages["verify"],
            loop_overhead_ms=overhead,
            loop_overhead_over_verify=overhead / stages["verify"] if stages["verify"] > 0 else None,
            stages_ms={name: stages[name] for name in (*ROUND_STAGES, "other")},
            matches_plain=new_tokens == self.reference,
        )
        return row

    def _host_syncs(self, budget: int, tau: float, continuation) -> dict:
        acceptance = [self._acceptance(budget, tau)]
        with HostReadCounter() as reads:
            per_round = RoundSyncCounter(reads)
            oracle_generation(self.target, self.head, self.prompt, continuation, budget, acceptance,
                              self.args.max_new_tokens, round_profiler=per_round, seed=self.args.seed,
                              generation_settings=self.generation_settings)
        result = {"budget": budget, "tau_target": tau, "rounds": len(per_round.per_round),
                  "per_round_max": max(per_round.per_round), "per_round_mean": sum(per_round.per_round) /
                  len(per_round.per_round), "reads_in_call": reads.count, "sites": reads.top_sites()}
        if self.device.type == "cuda":
            with CudaSyncCounter() as syncs:
                per_round = RoundSyncCounter(syncs)
                oracle_generation(self.target, self.head, self.prompt, continuation, budget, acceptance,
                                  self.args.max_new_tokens, round_profiler=per_round, seed=self.args.seed,
                              generation_settings=self.generation_settings)
            result.update(cuda_per_round_max=max(per_round.per_round),
                          cuda_per_round_mean=sum(per_round.per_round) / len(per_round.per_round))
        return result

    def _synced_profile(self, budget: int, tau: float, continuation) -> dict:
        profiler = RoundProfiler()
        oracle_generation(self.target, self.head, self.prompt, continuation, budget, [self._acceptance(budget, tau)],
                          self.args.max_new_tokens, round_profiler=profiler, seed=self.args.seed,
                              generation_settings=self.generation_settings)
        method = Method(name="oracle", kind="jetspec-tree", head="oracle", tree_budget=budget, tree_width=self.width)
        return {"tau_target": tau, **round_breakdown(method, profiler, 1)}


def run_synthetic(args, on_update=None) -> dict:
    """Run the synthetic benchmark for parsed `args`; `on_update(report)` is called after every measurement."""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        return _Run(args, on_update).run()
    finally:
        torch.set_num_threads(threads)


def _failures(report: dict) -> list[str]:
    """Variants that failed, and every output that differs from plain greedy decoding."""
    found = []
    for variant in report["variants"]:
        if variant.get("failed"):
            found.append(f"{variant['name']} failed: {variant['failed']}")
        if variant.get("plain") and not variant["plain"]["matches_reference"]:
            found.append(f"{variant['name']}: plain output differs from the first variant's")
        for row in variant.get("forced") or []:
            if row.get("matches_plain") is False:
                found.append(f"{variant['name']}, budget {row['budget']}, τ {row['tau_target']}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point of `jetspec-hf bench --synthetic`; exit status 1 when any output differs from plain greedy
    decoding (unless `--allow-mismatch`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_synthetic_args(argv)
    output_dir = Path(args.output_dir)
    json_path, markdown_path = output_dir / f"{REPORT_NAME}.json", output_dir / f"{REPORT_NAME}.md"
    command = shlex.join(["jetspec-hf", "bench", *(argv if "--synthetic" in argv else ["--synthetic", *argv])])

    def save(report: dict) -> None:
        report["command"] = command
        write_json(report, json_path)
        markdown_path.write_text(markdown(report), encoding="utf-8")

    report = run_synthetic(args, on_update=save)
    print(markdown(report))
    _log(f"wrote {json_path} and {markdown_path}")
    failures = _failures(report)
    for failure in failures:
        _log(f"FAILURE: {failure}")
    if any(variant.get("failed") for variant in report["variants"]):
        return 1
    if failures and not args.allow_mismatch:
        _log("FAILED: every output must equal plain greedy output token for token (see above).")
        return 1
    return 0


__all__ = ["main", "run_synthetic"]
