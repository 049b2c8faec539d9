"""The synthetic benchmark's measurements: single forwards at a fixed prefix, and whole generate calls.

Forward timings (`time_forwards`) call the loop's own building blocks (`prefill`, `verify_tree`, `HeadDrafter`) on
a cache holding the prompt, and put the cache back after each call: each value is the median of `repeats` calls,
each bracketed by device synchronisations (the latency the loop waits for, launches included). Generate calls
(`plain_generation`, `oracle_generation`) are timed whole, bracketed the same way, with nothing inside them
synchronising beyond what the loop itself does.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, GenerationMixin

from ...generation.cache import truncate_cache
from ...generation.capture import TappedLayerCapture
from ...generation.drafting import HeadDrafter
from ...generation.tree import DepthCandidates, DraftTree, build_tree
from ...generation.loop import tree_decoding
from ...generation.settings import resolve_tree_settings
from ...generation.verification import prefill, verify_tree
from ...devices import synchronize
from ..methods import greedy_config
from .oracle import AcceptanceSchedule, OracleDrafter


def median_ms(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of `call` in milliseconds, each call between two device synchronisations."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(samples)


def sample_tree(nodes: int, width: int, depth: int, vocab_size: int, seed: int = 0) -> DraftTree:
    """A node-level tree of `nodes` nodes grown as the loop grows one, from made-up per-depth scores (the verify's
    cost depends on the node count, not on which tokens the nodes hold)."""
    generator = random.Random(seed)
    candidates = DepthCandidates(
        log_probs=[[-0.5 - rank for rank in range(width)] for _ in range(depth)],
        tokens=[[generator.randrange(vocab_size) for _ in range(width)] for _ in range(depth)],
    )
    return build_tree(generator.randrange(vocab_size), candidates, nodes, width)


@dataclass
class ForwardTimings:
    """Milliseconds per call at a fixed prefix (the prompt).

    Attributes:
        prefill: the prompt's prefill into an empty cache, tapped features included.
        plain_step: one token through the target's ordinary path (what a plain decoding step runs).
        verify: tree node count -> one verify forward over a tree of that many nodes.
        draft: one head forward drafting every depth of a block, its context already projected.
    """

    prefill: float
    plain_step: float
    verify: dict[int, float]
    draft: float


def time_forwards(
    target, head, prompt: torch.Tensor, node_counts: list[int], width: int, depth: int, warmup: int, repeats: int
) -> ForwardTimings:
    """Time prefill, plain step, verify at each of `node_counts`, and a draft, at prefix `prompt.shape[1]`."""
    device = prompt.device
    prefix_length = prompt.shape[1]
    capture = TappedLayerCapture(target.model.layers, head.config.target_layer_ids)
    with capture, torch.inference_mode():

        def fresh_prefill():
            cache = DynamicCache(config=target.config)
            return cache, prefill(target, prompt, cache, capture)

        prefill_ms = median_ms(fresh_prefill, device, warmup, repeats)
        cache, (logits, features) = fresh_prefill()
        next_token = logits.argmax(dim=-1, keepdim=True)
        position = torch.full((1, 1), prefix_length, device=device)

        def plain_step():
            target(input_ids=next_token, position_ids=position, cache=cache, use_cache=True, logits_to_keep=1)
            truncate_cache(cache, prefix_length)

        plain_step_ms = median_ms(plain_step, device, warmup, repeats)
        verify_ms = {}
        for nodes in node_counts:
            tree = sample_tree(nodes, width, depth, target.config.vocab_size, seed=nodes)

            def verify():
                verify_tree(target, tree, prefix_length, cache, capture, device)
                truncate_cache(cache, prefix_length)

            verify_ms[nodes] = median_ms(verify, device, warmup, repeats)

        drafter = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings())
        drafter.add_context(features)
        anchor = prompt[:, -1:]
        draft_ms = median_ms(lambda: drafter.draft(anchor, depth), device, warmup, repeats)
    return ForwardTimings(prefill=prefill_ms, plain_step=plain_step_ms, verify=verify_ms, draft=draft_ms)


@dataclass
class Generation:
    """One generate call: the full sequence `(1, L)`, its wall time, and the tree loop's per-round record."""

    sequences: torch.Tensor
    seconds: float
    accepted_lengths: list[int] = field(default_factory=list)
    tree_sizes: list[int] = field(default_factory=list)
    planted: list[int] = field(default_factory=list)

    def new_tokens(self, prompt_length: int) -> list[int]:
        return self.sequences[0, prompt_length:].tolist()


def _timed(call: Callable[[], object], device: torch.device):
    synchronize(device)
    start = time.perf_counter()
    output = call()
    synchronize(device)
    return output, time.perf_counter() - start


def plain_generation(target, prompt: torch.Tensor, max_new_tokens: int, **generation_settings) -> Generation:
    """Plain greedy `generate` (the class's own, not the tree-routing one `enable` installs)."""
    config = greedy_config(max_new_tokens, **generation_settings)
    sequences, seconds = _timed(
        lambda: GenerationMixin.generate(
            target, prompt, attention_mask=torch.ones_like(prompt), generation_config=config
        ),
        prompt.device,
    )
    return Generation(sequences=sequences, seconds=seconds)


def oracle_generation(
    target,
    head,
    prompt: torch.Tensor,
    continuation: torch.Tensor,
    budget: int,
    acceptance: list[float],
    max_new_tokens: int,
    round_profiler=None,
    seed: int = 0,
    generation_settings: dict | None = None,
) -> Generation:
    """Tree decoding with an `OracleDrafter` that forces each round's acceptance (see `oracle.py`).

    `continuation` is the plain greedy sequence of `prompt` (`(1, L)` or `(L,)`), at least as long as this call's.
    """
    schedule = AcceptanceSchedule(acceptance, seed=seed)
    drafter = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings())
    oracle = OracleDrafter(drafter, continuation.reshape(-1).to(prompt.device), schedule)
    decode = functools.partial(
        tree_decoding,
        draft_head=head,
        tree_settings=resolve_tree_settings(head, {"tree_budget": budget}),
        round_profiler=round_profiler,
        drafter=oracle,
    )
    output, seconds = _timed(
        lambda: GenerationMixin.generate(
            target,
            prompt,
            attention_mask=torch.ones_like(prompt),
            generation_config=greedy_config(max_new_tokens, return_dict_in_generate=True,
                                            **(generation_settings or {})),
            custom_generate=decode,
        ),
        prompt.device,
    )
    return Generation(
        sequences=output.sequences,
        seconds=seconds,
        accepted_lengths=list(output.accepted_lengths),
        tree_sizes=list(output.tree_sizes),
        planted=list(oracle.planted),
    )


__all__ = ["ForwardTimings", "Generation", "median_ms", "oracle_generation", "plain_generation", "sample_tree",
           "time_forwards"]
