"""Second-turn latency of a chat on the bundled pair: with the cache the first turn returned, and without.

    python scripts/multi_turn_latency.py [--turns 6] [--first-tokens 128] [--reply-tokens 32] [--repeats 3]

A "chat" here is a held-out code prompt answered with `--first-tokens` tokens, then a follow-up (the start of
another held-out file) answered with `--reply-tokens` tokens. The follow-up runs four ways, interleaved call by call
(one torch thread, fastest of `--repeats` calls): the tree path from scratch, the tree path continuing from the cache
the first (tree) turn returned, and the same two for plain decoding. Every reply must be identical to a fresh plain
run. Prints a Markdown table and writes `multi_turn_latency.json` next to this script's `--output-dir`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.prompts import read_jsonl_prompts

BUNDLED = Path(__file__).resolve().parents[1] / "jetspec_hf" / "bundled"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=BUNDLED / "models" / "target")
    parser.add_argument("--head", type=Path, default=BUNDLED / "models" / "jetspec_head")
    parser.add_argument("--prompts-file", type=Path, default=BUNDLED / "heldout_prompts.jsonl")
    parser.add_argument("--turns", type=int, default=6, help="chats measured (default: 6)")
    parser.add_argument("--first-tokens", type=int, default=128)
    parser.add_argument("--reply-tokens", type=int, default=32)
    parser.add_argument("--tree-budget", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=Path("bench_results"))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    target = jetspec_hf.enable(AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.float32).eval())
    head = JetSpecDraftModel.from_pretrained(args.head, dtype=target.dtype).eval()
    texts = read_jsonl_prompts(args.prompts_file, "prompt")
    tree = dict(assistant_model=head, tree_budget=args.tree_budget)

    seconds = {"tree, fresh": 0.0, "tree, passed cache": 0.0, "plain, fresh": 0.0, "plain, passed cache": 0.0}
    identical, context_tokens = True, 0
    for turn in range(args.turns):
        first_ids = tokenizer(texts[2 * turn], return_tensors="pt").input_ids
        first = target.generate(first_ids, do_sample=False, max_new_tokens=args.first_tokens,
                                return_dict_in_generate=True, **tree)
        follow_up = tokenizer("\n\n" + texts[2 * turn + 1], return_tensors="pt").input_ids
        second_ids = torch.cat([first.sequences, follow_up], dim=1)
        context_tokens += second_ids.shape[1]
        expected = target.generate(second_ids, do_sample=False, max_new_tokens=args.reply_tokens)
        calls = {
            "tree, fresh": lambda: target.generate(second_ids, do_sample=False, max_new_tokens=args.reply_tokens,
                                                   **tree),
            # Each call consumes the cache it continues (it grows in place), so each gets its own copy, made
            # outside the timed region.
            "tree, passed cache": lambda cache: target.generate(second_ids, cache=cache, do_sample=False,
                                                                max_new_tokens=args.reply_tokens, **tree),
            "plain, fresh": lambda: target.generate(second_ids, do_sample=False, max_new_tokens=args.reply_tokens),
            "plain, passed cache": lambda cache: target.generate(second_ids, cache=cache, do_sample=False,
                                                                 max_new_tokens=args.reply_tokens),
        }
        fastest = dict.fromkeys(calls, float("inf"))
        for _ in range(args.repeats):
            for name, call in calls.items():
                arguments = (copy.deepcopy(first.cache),) if "passed" in name else ()
                start = time.perf_counter()
                output = call(*arguments)
                fastest[name] = min(fastest[name], time.perf_counter() - start)
                identical &= torch.equal(output, expected)
        for name in seconds:
            seconds[name] += fastest[name]

    rows = [{"method": name, "seconds": round(value, 4),
             "ms_per_reply": round(1000 * value / args.turns, 2),
             "speedup_over_plain_fresh": round(seconds["plain, fresh"] / value, 3)} for name, value in seconds.items()]
    print(f"Second turns: {args.turns} chats, mean context {context_tokens / args.turns:.0f} tokens, "
          f"{args.reply_tokens}-token replies, tree budget {args.tree_budget}; identical to plain: {identical}\n")
    print("| second turn | ms per reply | speed-up over plain from scratch |")
    print("| --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['method']} | {row['ms_per_reply']:.1f} | {row['speedup_over_plain_fresh']:.2f}× |")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {"turns": args.turns, "first_tokens": args.first_tokens, "reply_tokens": args.reply_tokens,
              "tree_budget": args.tree_budget, "mean_context_tokens": context_tokens / args.turns,
              "threads": 1, "identical": identical, "rows": rows}
    (args.output_dir / "multi_turn_latency.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
