"""Decode held-out ShareGPT chat prompts with SmolLM2-135M-Instruct and each given head: τ per tree budget, the
share of rounds that accept at least d draft tokens (per-depth acceptance as decoding meets it), and the outputs
checked against plain greedy decoding. fp32, one thread.

    python scripts/eval_smollm2_heads.py HEAD [HEAD ...] [--prompts 8] [--max-new-tokens 128] \
        [--budgets 2 4 8 16 32] [--json OUT]

Speed is not reported here (`jetspec-hf bench` measures it, interleaved); this is the quality of the heads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.bundled import SMOLLM2_PROMPTS
from jetspec_hf.prompts import encode_prompt, read_jsonl_prompts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("heads", nargs="+")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompts-file", default=str(SMOLLM2_PROMPTS))
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--depths", type=int, default=8, help="depths of the acceptance profile")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    target, tokenizer = jetspec_hf.load_smollm2()
    jetspec_hf.enable(target)
    prompts = read_jsonl_prompts(args.prompts_file, "prompt", args.prompts)
    inputs = [torch.tensor([encode_prompt(tokenizer, text, chat_template=True)]) for text in prompts]
    plain = [target.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=args.max_new_tokens) for ids in inputs]
    results = {}
    for head_path in args.heads:
        head = JetSpecDraftModel.from_pretrained(head_path, dtype=torch.float32).eval()
        rows = {}
        for budget in args.budgets:
            accepted, identical = [], True
            for ids, reference in zip(inputs, plain):
                out = target.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=args.max_new_tokens, assistant_model=head, tree_budget=budget,
                                      return_dict_in_generate=True)
                identical &= torch.equal(out.sequences, reference)
                accepted += list(out.accepted_lengths)
            rounds = len(accepted)
            profile = [round(sum(length - 1 >= d for length in accepted) / rounds, 4)
                       for d in range(1, args.depths + 1)]
            rows[budget] = {"tau": round(sum(accepted) / rounds, 3), "rounds": rounds, "identical": identical,
                            "accept_at_least_depth": profile}
            print(f"{Path(head_path).name} b={budget}: tau {rows[budget]['tau']:.3f}, identical {identical}, "
                  f"P(accepted >= d) {profile}", flush=True)
        results[str(head_path)] = rows
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
                                               "heads": results}, indent=2))
    return 0 if all(row["identical"] for rows in results.values() for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
