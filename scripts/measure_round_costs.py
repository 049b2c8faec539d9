"""What a round costs on SmolLM2-135M-Instruct: a plain decoding step, the verify forward at N nodes, and the head's
draft with the full vocabulary and with draft vocabularies, at one prefix length. fp32, one thread, the fastest of
`--repeats` calls of each, the measurements interleaved.

    python scripts/measure_round_costs.py [--head HEAD] [--prefix 300] [--repeats 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import DynamicCache

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.bundled import SMOLLM2_HEADS
from jetspec_hf.generation.capture import TappedLayerCapture
from jetspec_hf.generation.drafting import HeadDrafter
from jetspec_hf.generation.tree import DraftTree
from jetspec_hf.generation.verification import verify_tree

NODES = (1, 2, 4, 8, 16, 32)
VOCABULARIES = (None, 16384, 8192, 4096, 2048)


def chain(length: int, token: int = 100) -> DraftTree:
    """A chain of `length` nodes (the verify's cost depends on N, not on the shape)."""
    tree = DraftTree.root_only(token)
    for depth in range(1, length):
        tree = DraftTree(tokens=tree.tokens + [token + depth], parents=tree.parents + [depth - 1],
                         depths=tree.depths + [depth], scores=tree.scores + [0.0])
    return tree


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head", default=str(SMOLLM2_HEADS / "jetspec"))
    parser.add_argument("--prefix", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    target, _ = jetspec_hf.load_smollm2()
    head = JetSpecDraftModel.from_pretrained(args.head, dtype=torch.float32).eval()
    layers = head.config.target_layer_ids
    prompt = torch.randint(100, 40000, (1, args.prefix))
    with torch.inference_mode():
        base = DynamicCache(config=target.config)
        target(input_ids=prompt, cache=base, use_cache=True, logits_to_keep=1)
    capture = TappedLayerCapture(target.model.layers, layers)
    features = torch.randn(1, args.prefix, len(layers) * target.config.hidden_size)
    saved_vocab = head.draft_vocab_ids

    timings: dict[str, list[float]] = {}

    def timed(name, function):
        start = time.perf_counter()
        function()
        timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)

    def crop_after(function):
        def run():
            function()
            extra = base.get_seq_length() - args.prefix
            if extra:
                base.crop(-extra)
        return run

    token = torch.tensor([[123]])
    with torch.inference_mode(), capture:
        for _ in range(args.repeats):
            timed("plain step", crop_after(lambda: target(input_ids=token, cache=base, use_cache=True)))
            for nodes in NODES:
                tree = chain(nodes)
                timed(f"verify N={nodes}", crop_after(
                    lambda tree=tree: verify_tree(target, tree, args.prefix, base, capture, prompt.device)))
            for size in VOCABULARIES:
                if size is None:
                    head.draft_vocab_ids = None
                else:
                    head.draft_vocab_ids = torch.arange(size)
                drafter = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings())
                drafter.add_context(features)
                drafter.draft(token, 15)  # projects the context once; the timed draft is a round's
                timed(f"draft 15 depths, vocabulary {size or 'full'}", lambda: drafter.draft(token, 15))
    head.draft_vocab_ids = saved_vocab
    best = {name: round(min(values), 2) for name, values in timings.items()}
    for name, value in best.items():
        print(f"{name:40s} {value:8.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"prefix": args.prefix, "repeats": args.repeats, "ms": best}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
