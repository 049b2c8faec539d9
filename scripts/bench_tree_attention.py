"""CPU microbenchmark: today's materialised-mask verify attention against the split tree attention.

    taskset -c 0 python scripts/bench_tree_attention.py [--rounds 30] [--output examples/bench_tree_attention.json]

Two measurements on the bundled target's shapes (4 query heads, 2 kv heads, head dim 64, 6 layers), fp32, one
torch thread, variants interleaved call by call, fastest of `--rounds` calls reported:

1. attention only, per verify = building the mask + 6 attention calls:
   * `materialised`: host ancestor matrix -> zeros (1, 1, N, P + N) -> masked_fill, then HF `sdpa_attention_forward`
     (which repeats K/V for GQA because a mask is present), as `verification.py` does today;
   * `split`: host ancestor matrix -> `TreeAttentionMask.from_ancestors`, then `tree_attention_forward` forced onto
     its split route (prefix and tree parts, LSE merge);
   * `one_call`: the same, forced onto its one-kernel-call CPU route (folded full bias built once per verify);
   plus a finer prefix sweep that locates the crossovers;
2. a whole verify forward of the bundled target on a DynamicCache of P tokens, the three ways.

`tree_attention_forward` itself takes `one_call` below `CPU_SPLIT_FROM_PREFIX_LENGTH` and `split` from it on.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from jetspec_hf.generation import tree_attention
from jetspec_hf.generation.tree import DraftTree
from jetspec_hf.generation.tree_attention import TreeAttentionMask, install_tree_attention, tree_attention_forward

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARGET = REPO / "jetspec_hf" / "bundled" / "models" / "target"
DEFAULT_OUTPUT = REPO / "examples" / "bench_tree_attention.json"

PREFIX_LENGTHS = [64, 256, 1024, 3000]
NODE_COUNTS = [8, 16, 32, 64]
CROSSOVER_PREFIX_LENGTHS = [0, 8, 16, 32, 64, 128, 256, 512]
VERIFY_CASES = [(200, 16), (200, 64), (3000, 16), (3000, 64)]
# The bundled target's attention (jetspec_hf/bundled/models/target/config.json).
QUERY_HEADS, KV_HEADS, HEAD_DIM, LAYERS = 4, 2, 64, 6


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="target model folder")
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per variant (fastest is kept)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results")
    parser.add_argument("--skip-model", action="store_true", help="attention only, no whole verify forward")
    return parser.parse_args(argv)


def random_parents(num_nodes: int, rng: np.random.Generator) -> list[int]:
    """A random tree in creation order (a parent precedes its children)."""
    return [-1] + [int(rng.integers(0, node)) for node in range(1, num_nodes)]


def host_ancestor_matrix(parents: list[int]) -> np.ndarray:
    """Bool `(N, N)` built on the host, as the decoding loop builds it (`DraftTree.ancestor_matrix`)."""
    depths = [0] * len(parents)
    for node, parent in enumerate(parents[1:], start=1):
        depths[node] = depths[parent] + 1
    return DraftTree(tokens=[0] * len(parents), parents=parents, depths=depths).ancestor_matrix()


def materialised_mask(parents: list[int], prefix_length: int, dtype: torch.dtype) -> torch.Tensor:
    """Today's verify mask: additive `(1, 1, N, P + N)`, 0 where visible, dtype min elsewhere."""
    ancestors = torch.from_numpy(host_ancestor_matrix(parents))
    mask = torch.zeros(1, 1, len(parents), prefix_length + len(parents), dtype=dtype)
    mask[0, 0, :, prefix_length:].masked_fill_(~ancestors, torch.finfo(dtype).min)
    return mask


def split_mask(parents: list[int], prefix_length: int) -> TreeAttentionMask:
    return TreeAttentionMask.from_ancestors(host_ancestor_matrix(parents), prefix_length, "cpu")


def force_route(route: str) -> None:
    """Point `tree_attention_forward` at one route whatever the prefix length (the module's tuning constant)."""
    tree_attention.CPU_SPLIT_FROM_PREFIX_LENGTH = 0 if route == "split" else 1 << 30


def fastest_interleaved(variants: dict, rounds: int) -> dict[str, float]:
    """Seconds of the fastest call of each variant, calling them in turn so drift hits all alike."""
    for run in variants.values():  # warm-up
        run()
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def attention_case(prefix_length: int, num_nodes: int, rounds: int, seed: int = 0) -> dict:
    """One verify's attention work across the layers, both ways; also the max abs difference of the outputs."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    parents = random_parents(num_nodes, rng)
    # Layouts as in the model: the query is a transposed view of (B, N, H, D); cached K/V are contiguous.
    query = torch.randn(1, num_nodes, QUERY_HEADS, HEAD_DIM, generator=generator).transpose(1, 2)
    key = torch.randn(1, KV_HEADS, prefix_length + num_nodes, HEAD_DIM, generator=generator)
    value = torch.randn(1, KV_HEADS, prefix_length + num_nodes, HEAD_DIM, generator=generator)
    layer = SimpleNamespace(num_key_value_groups=QUERY_HEADS // KV_HEADS, is_causal=True)
    scale = HEAD_DIM**-0.5

    def materialised():
        mask = materialised_mask(parents, prefix_length, torch.float32)
        for _ in range(LAYERS):
            output, _ = sdpa_attention_forward(layer, query, key, value, mask, scaling=scale)
        return output

    def tree(route):
        def run():
            force_route(route)
            mask = split_mask(parents, prefix_length)
            for _ in range(LAYERS):
                output, _ = tree_attention_forward(layer, query, key, value, mask, scaling=scale)
            return output

        return run

    reference = materialised()
    difference = max((reference - tree(route)()).abs().max().item() for route in ("split", "one_call"))
    timings = fastest_interleaved(
        {
            "materialised": materialised,
            "split": tree("split"),
            "one_call": tree("one_call"),
            "materialised_mask_only": lambda: materialised_mask(parents, prefix_length, torch.float32),
            "tree_mask_only": lambda: split_mask(parents, prefix_length),
        },
        rounds,
    )
    return {"prefix_length": prefix_length, "num_nodes": num_nodes, "max_abs_diff": difference, **timings}


@torch.no_grad()
def verify_case(target, prefix_length: int, num_nodes: int, rounds: int, seed: int = 0) -> dict:
    """A whole verify forward (N tree tokens on a cache of P tokens), today's mask vs the split attention."""
    rng = np.random.default_rng(seed)
    parents = random_parents(num_nodes, rng)
    depths = []
    for parent in parents:
        depths.append(0 if parent < 0 else depths[parent] + 1)
    vocab = target.config.vocab_size
    prompt = torch.from_numpy(rng.integers(1, vocab, (1, prefix_length)))
    tokens = torch.from_numpy(rng.integers(1, vocab, (1, num_nodes)))
    positions = torch.tensor([depths]) + prefix_length
    cache = DynamicCache(config=target.config)
    target(input_ids=prompt, cache=cache, use_cache=True)

    def verify(build_mask):
        logits = target(
            input_ids=tokens, position_ids=positions, attention_mask=build_mask(), cache=cache, logits_to_keep=0
        ).logits
        cache.crop(-num_nodes)  # drop the tree rows again, as a round that accepted nothing would
        return logits

    def materialised():
        return verify(lambda: materialised_mask(parents, prefix_length, target.dtype))

    def tree(route):
        def run():
            force_route(route)
            return verify(lambda: {"full_attention": split_mask(parents, prefix_length)})

        return run

    reference = materialised()
    difference = max((reference - tree(route)()).abs().max().item() for route in ("split", "one_call"))
    timings = fastest_interleaved(
        {"materialised": materialised, "split": tree("split"), "one_call": tree("one_call")}, rounds
    )
    return {"prefix_length": prefix_length, "num_nodes": num_nodes, "max_abs_logit_diff": difference, **timings}


def crossover(rows: list[dict], faster: str, slower: str) -> dict[int, int | None]:
    """Per N, the smallest measured prefix length from which `faster` is at least as fast as `slower` at every
    longer measured prefix (None: not even at the longest)."""
    found = {}
    for num_nodes in sorted({row["num_nodes"] for row in rows}):
        swept = sorted((row for row in rows if row["num_nodes"] == num_nodes), key=lambda row: row["prefix_length"])
        found[num_nodes] = None
        for index, row in enumerate(swept):
            if all(later[faster] <= later[slower] for later in swept[index:]):
                found[num_nodes] = row["prefix_length"]
                break
    return found


def print_attention_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n")
    print(
        "| P | N | materialised µs | split µs | one_call µs | split / mat. | one_call / mat. |"
        " mask build µs (mat. / tree) | max abs diff |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['prefix_length']} | {row['num_nodes']} | {row['materialised'] * 1e6:.0f}"
            f" | {row['split'] * 1e6:.0f} | {row['one_call'] * 1e6:.0f}"
            f" | {row['split'] / row['materialised']:.2f} | {row['one_call'] / row['materialised']:.2f}"
            f" | {row['materialised_mask_only'] * 1e6:.0f} / {row['tree_mask_only'] * 1e6:.0f}"
            f" | {row['max_abs_diff']:.1e} |"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    shipped_threshold = tree_attention.CPU_SPLIT_FROM_PREFIX_LENGTH  # force_route overwrites it
    install_tree_attention()

    attention = [attention_case(p, n, args.rounds) for p in PREFIX_LENGTHS for n in NODE_COUNTS]
    title = f"Attention only, per verify ({LAYERS} layers + mask build), fastest of {args.rounds}"
    print_attention_table(title, attention)
    sweep = [attention_case(p, n, args.rounds) for n in NODE_COUNTS for p in CROSSOVER_PREFIX_LENGTHS]
    print_attention_table("Crossover sweep (attention only)", sweep)
    crossovers = {
        "split_vs_materialised": crossover(sweep + attention, "split", "materialised"),
        "one_call_vs_materialised": crossover(sweep + attention, "one_call", "materialised"),
        "split_vs_one_call": crossover(sweep + attention, "split", "one_call"),
    }
    print("\nper N, the prefix length from which the first is at least as fast as the second:")
    for name, found in crossovers.items():
        print(f"  {name}: {found}")

    verify = []
    if not args.skip_model:
        target = AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.float32).eval()
        target.set_attn_implementation("sdpa")
        verify = [verify_case(target, p, n, max(args.rounds // 2, 5)) for p, n in VERIFY_CASES]
        print(f"\nWhole verify forward of {args.target.name} (fastest of {max(args.rounds // 2, 5)})\n")
        print(
            "| P | N | materialised ms | split ms | one_call ms | split / mat. | one_call / mat."
            " | max abs logit diff |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in verify:
            print(
                f"| {row['prefix_length']} | {row['num_nodes']} | {row['materialised'] * 1e3:.2f}"
                f" | {row['split'] * 1e3:.2f} | {row['one_call'] * 1e3:.2f}"
                f" | {row['split'] / row['materialised']:.2f} | {row['one_call'] / row['materialised']:.2f}"
                f" | {row['max_abs_logit_diff']:.1e} |"
            )

    results = {
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "dtype": "float32",
        },
        "shapes": {"query_heads": QUERY_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "layers": LAYERS},
        "rounds": args.rounds,
        "unit": "seconds, fastest call",
        "attention": attention,
        "crossover_sweep": sweep,
        "crossover_prefix_lengths": {
            name: {str(n): p for n, p in found.items()} for name, found in crossovers.items()
        },
        "cpu_split_from_prefix_length": shipped_threshold,
        "verify_forward": verify,
    }
    tree_attention.CPU_SPLIT_FROM_PREFIX_LENGTH = shipped_threshold
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
