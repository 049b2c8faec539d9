"""Decode-time quality of a bundled draft head on held-out prompts: τ per tree budget and per-depth top-1 accuracy.

    python scripts/bundled/eval_heads.py [HEAD_DIR ...] [--prompts 12] [--new-tokens 96] [--json OUT]

The heads' own training evaluation (`eval_results.json`) scores them on the target's greedy continuations of the
eval windows, the distribution they were trained on. This script measures what decoding sees instead, on the
held-out prompts of `jetspec_hf/bundled/heldout_prompts.jsonl` (the protocol of `tests/test_bundled_pair.py`):

- τ: tokens committed per verify round (`out.accepted_lengths`) of `target.generate(..., assistant_model=head,
  tree_budget=B)` with the node-level tree, at each budget; the output is checked against plain greedy.
- per-depth top-1 accuracy of the head on the greedy continuation. At an anchor position a (the root of a round:
  the last committed token, whose features the head does not have yet), the head drafts its block from the
  target's tapped features of positions < a, exactly as the decoding loop's `HeadDrafter` does; depth d is right
  when its argmax is the greedy token at a + d. "conditional" counts depth d only where depths < d were all right
  (what a chain of top-1 tokens gets to see), "unconditional" counts it everywhere. Two anchor sets:
    positions: every generated position (the same anchors for every head, so heads compare directly);
    rounds:    the anchors of the actual verify rounds of the budget-`--rounds-budget` decode.
  "chain" is the mean number of top-1 tokens a chain would get accepted (the conditional run length).

Everything runs in float32 on one CPU thread. Results go to stdout and, with --json, to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.prompts import read_jsonl_prompts
from jetspec_hf.generation.drafting import HeadDrafter
from jetspec_hf.training.features import TargetFeatureExtractor

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "jetspec_hf" / "bundled" / "models"
PROMPTS_FILE = REPO / "jetspec_hf" / "bundled" / "heldout_prompts.jsonl"
BUDGETS = (8, 16, 32, 64)
TREE_WIDTH = 16


def heldout_prompts(count: int) -> list[str]:
    """The first `count` held-out prompts (the same ones tests/bundled.py reads)."""
    return read_jsonl_prompts(PROMPTS_FILE, "prompt", count)


class DepthTally:
    """Per-depth counts of right/scored drafts, conditional and unconditional, plus the chain run lengths."""

    def __init__(self, depths: int):
        self.depths = depths
        self.cond_right = [0] * depths
        self.cond_seen = [0] * depths
        self.right = [0] * depths
        self.seen = [0] * depths
        self.chain_sum = 0
        self.anchors = 0

    def add(self, predicted: list[int], truth: list[int]) -> None:
        """One anchor: `predicted[d-1]` is the head's depth-d argmax, `truth` the greedy tokens after the anchor
        (possibly fewer than `depths` near the end of the sequence; missing depths are not scored)."""
        self.anchors += 1
        all_right = True
        run = 0
        for depth, (guess, token) in enumerate(zip(predicted, truth)):
            right = guess == token
            self.seen[depth] += 1
            self.right[depth] += right
            if all_right:
                self.cond_seen[depth] += 1
                self.cond_right[depth] += right
                all_right = right
                run += right
        self.chain_sum += run

    def summary(self) -> dict:
        ratio = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
        return {
            "anchors": self.anchors,
            "conditional": [ratio(a, b) for a, b in zip(self.cond_right, self.cond_seen)],
            "conditional_counts": self.cond_seen,
            "unconditional": [ratio(a, b) for a, b in zip(self.right, self.seen)],
            "chain": round(self.chain_sum / max(1, self.anchors), 4),
        }


@torch.no_grad()
def head_predictions(target, head, extractor, sequence: torch.Tensor, anchors: list[int]) -> dict[int, list[int]]:
    """The head's top-1 token at every depth for each anchor of `sequence` `(1, L)`, drafted as decoding does.

    One `HeadDrafter` walks the anchors in increasing order; before each draft it receives the target features of
    the positions between the previous anchor and this one, so its cache holds exactly the context a decoding
    round would have (features of a causal target do not depend on what follows, so one forward over the whole
    sequence gives them all).
    """
    features = extractor(sequence).features
    drafter = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings())
    depth = head.config.block_size - 1
    predictions, known = {}, 0
    for anchor in sorted(anchors):
        drafter.add_context(features[:, known:anchor])
        known = anchor
        logits = drafter.draft(sequence[:, anchor : anchor + 1], depth)
        predictions[anchor] = logits.argmax(-1).tolist()
    return predictions


def evaluate_head(head_dir: Path, target, tokenizer, prompts: list[str], new_tokens: int, budgets, rounds_budget: int):
    """τ per budget and the per-depth tallies of one head (see the module doc)."""
    head = JetSpecDraftModel.from_pretrained(head_dir, dtype=torch.float32).eval()
    extractor = TargetFeatureExtractor(target, head.config.target_layer_ids)
    depths = head.config.block_size - 1
    committed = {b: 0 for b in budgets}
    rounds = {b: 0 for b in budgets}
    identical = True
    by_position, by_round = DepthTally(depths), DepthTally(depths)
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        plain = target.generate(ids, do_sample=False, max_new_tokens=new_tokens)
        round_anchors = None
        for budget in budgets:
            out = target.generate(ids, do_sample=False, max_new_tokens=new_tokens, assistant_model=head,
                                  tree_budget=budget, tree_width=TREE_WIDTH, tree_expansion="node",
                                  return_dict_in_generate=True)
            identical &= torch.equal(out.sequences, plain)
            committed[budget] += sum(out.accepted_lengths)
            rounds[budget] += len(out.accepted_lengths)
            if budget == rounds_budget:
                # The prefill commits the first new token (at position len(ids)); it is the first round's anchor,
                # and each round's last committed token is the next one's. The last round's end is not an anchor.
                starts = torch.tensor([0] + out.accepted_lengths[:-1]).cumsum(0) + ids.shape[1]
                round_anchors = starts.tolist()
        sequence = plain
        length = sequence.shape[1]
        # Every generated position that has at least one token after it can anchor a round.
        anchors = list(range(ids.shape[1], length - 1))
        predictions = head_predictions(target, head, extractor, sequence, anchors)
        tokens = sequence[0].tolist()
        for anchor in anchors:
            truth = tokens[anchor + 1 : anchor + 1 + depths]
            by_position.add(predictions[anchor][: len(truth)], truth)
            if round_anchors is not None and anchor in round_anchors:
                by_round.add(predictions[anchor][: len(truth)], truth)
    return {
        "head": head_dir.name,
        "causal": head.config.causal_head,
        "identical_to_greedy": bool(identical),
        "tau": {str(b): round(committed[b] / rounds[b], 4) for b in budgets},
        "rounds": {str(b): rounds[b] for b in budgets},
        "depth_accuracy_positions": by_position.summary(),
        f"depth_accuracy_rounds_b{rounds_budget}": by_round.summary(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("heads", nargs="*", type=Path,
                        default=[MODELS / "jetspec_head", MODELS / "dflash_head"], help="head folders")
    parser.add_argument("--target", type=Path, default=MODELS / "target")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--rounds-budget", type=int, default=64, help="budget whose round anchors are scored")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    target = jetspec_hf.enable(AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.float32).eval())
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    prompts = heldout_prompts(args.prompts)
    results = {"protocol": {"prompts": args.prompts, "new_tokens": args.new_tokens, "tree_width": TREE_WIDTH,
                            "tree_expansion": "node", "budgets": args.budgets, "dtype": "float32"},
               "heads": []}
    for head_dir in args.heads:
        start = time.time()
        result = evaluate_head(head_dir, target, tokenizer, prompts, args.new_tokens, args.budgets,
                               args.rounds_budget)
        result["seconds"] = round(time.time() - start, 1)
        results["heads"].append(result)
        conditional = result["depth_accuracy_positions"]["conditional"]
        print(f"{head_dir}: identical={result['identical_to_greedy']} tau={result['tau']} "
              f"chain={result['depth_accuracy_positions']['chain']} "
              f"cond d1-6={conditional[:6]} ({result['seconds']}s)", file=sys.stderr)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
