"""`tree_budget="auto"` against fixed budgets and plain decoding on the bundled pair, in three settings.

1. short prompts, greedy: the held-out prompts, every output checked against plain greedy;
2. a long context, greedy: each prompt is the concatenation of held-out standard-library files (from
   `scripts/bundled/heldout_files.txt`, read from this interpreter's standard library, the bundled corpus), starting
   at a different file per prompt, cut to `--long-context` tokens;
3. sampling: the short prompts with `do_sample=True, temperature=0.7, top_k=0`.

In each setting every method runs on every prompt `--repeats` times, interleaved call by call, and keeps its
fastest call per prompt; speed is new tokens over the summed fastest calls, so sampled runs that stop early are
compared fairly. The process's CPU time is recorded beside the wall time: on a machine shared with other jobs it
is the steadier measure of the same work. The one-time verify-cost measurement of the process runs first and is
reported apart; then one untimed call per method on the first prompt of each setting (for `auto`, its first call
also times the head's draft and calibrates). Run from the repository root:

    taskset -c 0 python scripts/bench_auto_budget.py --threads 1

It prints one Markdown table per setting and writes them, with the chosen tree sizes, to `--output`.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.prompts import read_jsonl_prompts
from jetspec_hf.generation.budget.measurement import verify_costs_for

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "jetspec_hf" / "bundled" / "models"
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_k": 0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=12, help="short prompts (default: 12)")
    parser.add_argument("--long-samples", type=int, default=4, help="long-context prompts (default: 4)")
    parser.add_argument("--long-context", type=int, default=3000, help="tokens per long prompt (default: 3000)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 64], help="fixed budgets to compare")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per prompt and method, fastest kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=["short", "long", "sampling"],
                        choices=["short", "long", "sampling"])
    parser.add_argument("--output", default=str(REPO / "examples" / "bench_auto_budget.json"))
    return parser.parse_args()


def long_prompts(tokenizer, count: int, length: int) -> list[torch.Tensor]:
    """Held-out standard-library files concatenated, from file i on for prompt i, cut to `length` tokens."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = (REPO / "scripts" / "bundled" / "heldout_files.txt").read_text().split()
    prompts = []
    for first in range(count):
        ids: list[int] = []
        index = first
        while len(ids) < length:
            text = (root / files[index % len(files)]).read_text(encoding="utf-8", errors="replace")
            ids += tokenizer(text, verbose=False)["input_ids"]
            index += 1
        prompts.append(torch.tensor([ids[:length]]))
    return prompts


def short_prompts(tokenizer, count: int) -> list[torch.Tensor]:
    texts = read_jsonl_prompts(REPO / "jetspec_hf" / "bundled" / "heldout_prompts.jsonl", "prompt", count)
    return [tokenizer(text, return_tensors="pt").input_ids for text in texts]


def run_setting(target, head, prompts, methods: dict, decoding: dict, max_new_tokens: int, repeats: int) -> dict:
    """Every method on every prompt, interleaved; returns per-method totals."""
    def call(kwargs, input_ids, seed):
        torch.manual_seed(seed)
        extra = {"assistant_model": head, "return_dict_in_generate": True, **kwargs} if kwargs is not None else {}
        return target.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                                **decoding, **extra)

    warmup = {}
    for name, kwargs in methods.items():
        started = time.perf_counter()
        call(kwargs, prompts[0], 0)
        warmup[name] = time.perf_counter() - started
    totals = {name: {"seconds": 0.0, "cpu_seconds": 0.0, "new_tokens": 0, "rounds": 0, "committed": 0,
                     "sizes": Counter(), "mismatches": 0, "warmup_seconds": round(warmup[name], 3)}
              for name in methods}
    reference = {}
    for index, input_ids in enumerate(prompts):
        fastest = dict.fromkeys(methods, float("inf"))
        fastest_cpu = dict.fromkeys(methods, float("inf"))
        for repeat in range(repeats):
            for name, kwargs in methods.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                output = call(kwargs, input_ids, 1000 * index + repeat)
                fastest[name] = min(fastest[name], time.perf_counter() - started)
                fastest_cpu[name] = min(fastest_cpu[name], time.process_time() - started_cpu)
                if repeat:
                    continue
                sequences = output if isinstance(output, torch.Tensor) else output.sequences
                new_tokens = sequences[0, input_ids.shape[1]:].tolist()
                total = totals[name]
                total["new_tokens"] += len(new_tokens)
                if kwargs is None:
                    reference[index] = new_tokens
                else:
                    total["rounds"] += len(output.accepted_lengths)
                    total["committed"] += sum(output.accepted_lengths)
                    total["sizes"].update(output.tree_sizes)
                    if not decoding.get("do_sample") and new_tokens != reference[index]:
                        total["mismatches"] += 1
        for name in methods:
            totals[name]["seconds"] += fastest[name]
            totals[name]["cpu_seconds"] += fastest_cpu[name]
    plain = totals["plain"]
    for total in totals.values():
        speed = total["new_tokens"] / total["seconds"]
        total["tokens_per_second"] = round(speed, 2)
        total["speedup"] = round(speed / (plain["new_tokens"] / plain["seconds"]), 3)
        # On a shared machine the process's CPU time is the steadier measure of the same work.
        total["cpu_speedup"] = round(
            (total["new_tokens"] / total["cpu_seconds"]) / (plain["new_tokens"] / plain["cpu_seconds"]), 3)
        total["cpu_seconds"] = round(total["cpu_seconds"], 3)
        total["tau"] = round(total["committed"] / total["rounds"], 3) if total["rounds"] else None
        sizes = total.pop("sizes")
        total["mean_tree_size"] = round(sum(k * v for k, v in sizes.items()) / total["rounds"], 2) if sizes else None
        total["tree_sizes"] = {str(size): count for size, count in sorted(sizes.items())}
        total["seconds"] = round(total["seconds"], 3)
    return totals


def table(title: str, totals: dict) -> str:
    columns = ("method", "τ", "mean tree", "root-only rounds", "tokens/s", "vs plain", "vs plain (CPU time)",
               "matches plain")
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "| --- " + "| ---: " * 6 + "| :---: |"]
    for name, total in totals.items():
        rounds = total["rounds"]
        root_only = f"{100 * total['tree_sizes'].get('1', 0) / rounds:.0f}%" if rounds else "–"
        tau = f"{total['tau']:.2f}" if total["tau"] else "–"
        tree = f"{total['mean_tree_size']:.1f}" if total["mean_tree_size"] else "–"
        matches = "–" if name == "plain" or total.get("sampled") else ("yes" if not total["mismatches"] else "NO")
        lines.append(f"| {name} | {tau} | {tree} | {root_only} | {total['tokens_per_second']:.1f} | "
                     f"{total['speedup']:.2f}× | {total['cpu_speedup']:.2f}× | {matches} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    target = AutoModelForCausalLM.from_pretrained(MODELS / "target", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(MODELS / "target")
    head = JetSpecDraftModel.from_pretrained(MODELS / "jetspec_head", dtype=torch.float32).eval()
    jetspec_hf.enable(target)

    fixed = {f"b={budget}": {"tree_budget": budget} for budget in args.budgets}
    methods = {"plain": None, **fixed, "auto": {"tree_budget": "auto"}}
    # The cost measurement happens once per process, on the first auto call: timed here on its own.
    started = time.perf_counter()
    verify_costs_for(target, head.config.target_layer_ids, torch.device("cpu"), head.config.block_size)
    measurement_seconds = time.perf_counter() - started

    short = short_prompts(tokenizer, args.samples)
    settings = {
        "short": (f"{args.samples} short prompts × {args.max_new_tokens} tokens, greedy", short, {"do_sample": False}),
        "long": (f"{args.long_samples} prompts of {args.long_context} tokens × {args.max_new_tokens} tokens, greedy",
                 long_prompts(tokenizer, args.long_samples, args.long_context), {"do_sample": False}),
        "sampling": (f"{args.samples} short prompts × {args.max_new_tokens} tokens, temperature 0.7, top_k 0",
                     short, SAMPLING),
    }
    report = {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
              "cost_measurement_seconds": round(measurement_seconds, 2), "settings": {}}
    print(f"verify-cost measurement (once per process): {measurement_seconds:.2f} s", file=sys.stderr)
    for key in args.settings:
        title, prompts, decoding = settings[key]
        print(f"running: {title}", file=sys.stderr, flush=True)
        totals = run_setting(target, head, prompts, methods, decoding, args.max_new_tokens, args.repeats)
        for total in totals.values():
            total["sampled"] = bool(decoding.get("do_sample"))
        report["settings"][key] = {"title": title, "methods": totals}
        print(table(title, totals) + "\n", flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
