"""The main job on the bundled small models: plain greedy vs JetSpec tree decoding, same tokens, fewer forwards.

    python examples/quickstart.py [--prompts 4] [--max-new-tokens 128] [--tree-budget 16]
                                  [--prompt-lookup-num-tokens 10] [--threads 1]

Loads the bundled Qwen3 target (trained on the Python standard library) and its JetSpec head, generates from
held-out code prompts with and without the head, checks that the outputs are identical, and prints the text,
τ (tokens committed per round) and tokens/s of both. Exits with status 1 if any output differs.

It runs the settings that were fastest on a 2-core CPU (`benchmark.md`): a 16-node tree with a 10-token
prompt-lookup branch. The package's defaults are `tree_budget="auto"` and no lookup branch (a lookup branch pays
most on text that repeats itself, and this target repeats itself a lot); `--tree-budget auto
--prompt-lookup-num-tokens 0` runs those.

The two paths alternate prompt by prompt in one process, on one torch thread by default: on a small shared CPU,
two threads or back-to-back runs swing timings by a quarter. `jetspec-hf bench` is the careful measurement.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.prompts import read_jsonl_prompts

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_TARGET = EXAMPLES / "models" / "target"
DEFAULT_HEAD = EXAMPLES / "models" / "jetspec_head"
DEFAULT_PROMPTS = EXAMPLES / "data" / "heldout_prompts.jsonl"
# The generated text is printed in bold on a terminal; a pipe or a file gets the plain text.
BOLD, PLAIN = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="target model folder")
    parser.add_argument("--head", type=Path, default=DEFAULT_HEAD, help="JetSpec head folder")
    parser.add_argument("--prompts-file", type=Path, default=DEFAULT_PROMPTS, help="JSONL with a `prompt` field")
    parser.add_argument("--prompts", type=int, default=4, help="how many prompts to run")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--tree-budget", type=_budget, default=16,
                        help="tree nodes verified per round, or 'auto' (chosen every round)")
    parser.add_argument("--prompt-lookup-num-tokens", type=int, default=10,
                        help="add a prompt-lookup branch of this many tokens to every tree (0: the head alone)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, for steady timings)")
    return parser.parse_args(argv)


def _budget(value: str) -> int | str:
    return value if value == "auto" else int(value)


def timed_generate(model, inputs, **kwargs):
    start = time.perf_counter()
    output = model.generate(**inputs, do_sample=False, return_dict_in_generate=True, **kwargs)
    return output, time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.float32).eval()
    head = JetSpecDraftModel.from_pretrained(args.head, dtype=target.dtype).eval()
    jetspec_hf.enable(target)
    prompts = read_jsonl_prompts(args.prompts_file, "prompt")
    prompts = prompts[: args.prompts]

    # Warm-up, so that one-off allocations are not charged to the first prompt. With `tree_budget="auto"` the first
    # call also times this machine's verify forwards, once per process.
    warm = tokenizer(prompts[0], return_tensors="pt")
    timed_generate(target, warm, max_new_tokens=8)
    tree_settings = {"tree_budget": args.tree_budget}
    if args.prompt_lookup_num_tokens:
        tree_settings["prompt_lookup_num_tokens"] = args.prompt_lookup_num_tokens
    _, warm_seconds = timed_generate(target, warm, max_new_tokens=8, assistant_model=head, **tree_settings)
    if args.tree_budget == "auto":
        print(f"tree_budget='auto': first call, including this machine's cost measurement, took {warm_seconds:.1f} s")

    totals = {"plain_tokens": 0, "plain_seconds": 0.0, "tree_tokens": 0, "tree_seconds": 0.0, "rounds": 0,
              "committed": 0, "tree_forwards": 0}
    all_identical = True
    for index, prompt in enumerate(prompts):
        inputs = tokenizer(prompt, return_tensors="pt")
        prompt_length = inputs["input_ids"].shape[1]
        plain, plain_seconds = timed_generate(target, inputs, max_new_tokens=args.max_new_tokens)
        tree, tree_seconds = timed_generate(
            target, inputs, max_new_tokens=args.max_new_tokens, assistant_model=head, **tree_settings
        )
        identical = torch.equal(plain.sequences, tree.sequences)
        all_identical &= identical
        new_tokens = plain.sequences.shape[1] - prompt_length
        totals["plain_tokens"] += new_tokens
        totals["plain_seconds"] += plain_seconds
        totals["tree_tokens"] += tree.sequences.shape[1] - prompt_length
        totals["tree_seconds"] += tree_seconds
        totals["rounds"] += len(tree.accepted_lengths)
        totals["committed"] += sum(tree.accepted_lengths)
        # Plain decoding runs one target forward per new token (the prefill yields the first); the tree path runs
        # the prefill of all but the last prompt token, then one verify forward per round.
        tree_forwards = len(tree.accepted_lengths) + 1
        totals["tree_forwards"] += tree_forwards

        print(f"=== prompt {index + 1}/{len(prompts)} " + "=" * 50)
        print(prompt, end="")
        print(BOLD + tokenizer.decode(tree.sequences[0, prompt_length:]) + PLAIN)
        print(
            f"--- identical: {identical} | plain: {new_tokens / plain_seconds:.1f} tok/s | "
            f"JetSpec: {new_tokens / tree_seconds:.1f} tok/s, tau {tree.tau:.2f} "
            f"({tree_forwards} target forwards instead of {new_tokens})"
        )

    plain_speed = totals["plain_tokens"] / totals["plain_seconds"]
    tree_speed = totals["tree_tokens"] / totals["tree_seconds"]
    print("\n| decoding | tokens/s | tau | target forwards |")
    print("| --- | --- | --- | --- |")
    print(f"| plain greedy | {plain_speed:.1f} | 1.00 | {totals['plain_tokens']} |")
    # τ over verify rounds only: the first new token of each prompt comes from the prefill, as in plain decoding.
    tau = totals["committed"] / max(totals["rounds"], 1)
    lookup = f", lookup {args.prompt_lookup_num_tokens}" if args.prompt_lookup_num_tokens else ""
    print(f"| JetSpec tree (budget {args.tree_budget}{lookup}) | {tree_speed:.1f} | {tau:.2f} | "
          f"{totals['tree_forwards']} |")
    print(f"\nspeed-up {tree_speed / plain_speed:.2f}x; outputs identical: {all_identical}")
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(main())
