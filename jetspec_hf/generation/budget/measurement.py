"""Timing the target's verify forward and the head's draft on this machine, once per process (optionally on disk).

The forwards run the loop's own `verify_tree` and `HeadDrafter.draft` on scratch state: a cache of their own
(filled by a short prefill, then lengthened by repeating its rows, which costs no forward), a capture active in
this context only, a drafter of their own. Nothing of the target changes: no hook, no config, no cache of the
caller's, and the tokens are fixed (no random draw that would move a seeded sampling run). A plain `generate` in
another thread on the same target keeps running undisturbed (the verify's tree attention is routed per call, see
`verification.py`); only its timings, and these, share the machine.

Measured costs are kept per process, keyed by the target's configuration, device, dtype, attention backend and
thread count. Setting `JETSPEC_HF_COST_CACHE` to a folder keeps them on disk as well, keyed also by the torch and
transformers versions and the device's name, so that later processes skip the measurement.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import threading
import time
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.utils import logging

from ...devices import synchronize
from ...modeling_jetspec import JetSpecDraftModel
from ..cache import truncate_cache
from ..capture import TappedLayerCapture
from .costs import MEASURED_NODE_COUNTS, VerifyCosts
from ..drafting import HeadDrafter
from ..tree import DraftTree
from ..verification import prefill, verify_tree

logger = logging.get_logger(__name__)

COST_CACHE_ENV = "JETSPEC_HF_COST_CACHE"
# Prefix lengths the verify is timed at: its cost grows linearly with the prefix in between and beyond.
MEASURED_PREFIX_LENGTHS = (64, 1024, 4096)
# RoPE variants that rewrite the rotary tables when a position passes the model's maximum: the measurement stays
# below that position for them, so that it never changes the target.
_STATEFUL_ROPE_TYPES = frozenset({"dynamic", "longrope"})

_VERIFY_COSTS: dict[str, VerifyCosts] = {}
_MEASURING = threading.Lock()


def cost_signature(target: PreTrainedModel, device: torch.device) -> dict:
    """What a verify's cost depends on: the model's configuration (its shapes), dtype, attention backend, device
    and thread count, and the software that runs it."""
    config = target.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "architectures"):
        config.pop(volatile, None)
    device = torch.device(device)
    return {
        "model": type(target).__name__,
        "config": hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16],
        "dtype": str(target.get_input_embeddings().weight.dtype),
        "attention": target.config._attn_implementation,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _signature_key(signature: dict) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:20]


def verify_costs_for(target: PreTrainedModel, layer_ids: list[int], device: torch.device,
                     max_tokens_per_round: int) -> VerifyCosts:
    """The verify table of `target` on `device`: measured on the first call of the process, read from
    `JETSPEC_HF_COST_CACHE` when set and it holds one for this signature.

    Args:
        layer_ids: the tapped layers the verify captures (the head's).
        max_tokens_per_round: the most a round can commit (tree depth + 1); trees whose verify costs more than
            that many one-node verifies can never pay and are not timed.
    """
    signature = cost_signature(target, device)
    key = _signature_key(signature)
    with _MEASURING:
        costs = _VERIFY_COSTS.get(key) or _read_disk(key, signature)
        if costs is None:
            if torch.device(device).type == "cpu":
                # Tens of seconds for a 100M-parameter target on one CPU thread: say why the first call is slow.
                logger.warning(
                    "JetSpec: tree_budget='auto' times this target's verify forward once per process (1 to 256 "
                    "nodes on 64- to 4,096-position prefixes); on a CPU that takes seconds to a minute. Set "
                    "JETSPEC_HF_COST_CACHE=<folder> to keep the table for later processes, or pass an integer "
                    "tree_budget."
                )
            started = time.perf_counter()
            costs = measure_verify_costs(target, layer_ids, device, max_tokens_per_round)
            logger.info(f"JetSpec: measured the verify costs in {time.perf_counter() - started:.2f} s.")
            _write_disk(key, signature, costs)
        _VERIFY_COSTS[key] = costs
    return costs


def forget_verify_costs(target: PreTrainedModel, device: torch.device) -> None:
    """Drop the kept table of `target` on `device` (in the process and on disk), so that the next call measures it
    again: the rounds' times have drifted away from it."""
    key = _signature_key(cost_signature(target, device))
    with _MEASURING:
        _VERIFY_COSTS.pop(key, None)
        path = _disk_path(key)
        if path is not None:
            path.unlink(missing_ok=True)


def remember_verify_costs(target: PreTrainedModel, device: torch.device, costs: VerifyCosts) -> None:
    """Use `costs` for `target` on `device` in this process instead of measuring (tests, or a table from
    elsewhere)."""
    with _MEASURING:
        _VERIFY_COSTS[_signature_key(cost_signature(target, device))] = costs


def measure_verify_costs(
    target: PreTrainedModel,
    layer_ids: list[int],
    device: torch.device,
    max_tokens_per_round: int,
    node_counts: tuple[int, ...] = MEASURED_NODE_COUNTS,
    prefix_lengths: tuple[int, ...] = MEASURED_PREFIX_LENGTHS,
    repeats: int | None = None,
) -> VerifyCosts:
    """Time `verify_tree` for every node count at every prefix length on a scratch cache, the fastest of `repeats`
    runs each (default: 2 on a CPU, where other work disturbs single runs, 1 on an accelerator), and one run more
    at the shortest prefix, whose row decides which node counts are timed at all and warms every shape up.

    A prefix length whose scratch cache does not fit in the device's memory ends the measurement there: longer
    prefixes are extrapolated from the shorter ones.
    """
    device = torch.device(device)
    repeats = repeats or (2 if device.type == "cpu" else 1)
    prefix_lengths = _safe_prefix_lengths(target, prefix_lengths, max(node_counts))
    cache = DynamicCache(config=target.config)
    rows: list[list[float]] = []
    with TappedLayerCapture(target.model.layers, layer_ids) as capture, torch.inference_mode():
        prefill(target, _fixed_tokens(target.config.vocab_size, prefix_lengths[0], device)[None], cache, capture)
        for prefix_length in prefix_lengths:
            try:
                rows.append(_timed_row(target, cache, capture, device, prefix_length,
                                       node_counts[: len(rows[0])] if rows else node_counts,
                                       repeats if rows else repeats + 1, None if rows else max_tokens_per_round))
            except torch.OutOfMemoryError:
                if not rows:
                    raise
                break
    del cache
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return VerifyCosts(tuple(node_counts[: len(rows[0])]), tuple(prefix_lengths[: len(rows)]),
                       tuple(map(tuple, rows)))


def _timed_row(target, cache, capture, device, prefix_length: int, node_counts, runs: int,
               max_tokens_per_round: int | None) -> list[float]:
    """Seconds of each node count's verify on a `prefix_length` cache; with `max_tokens_per_round`, stops after the
    first tree that costs more than that many one-node verifies (larger trees can never pay)."""
    _lengthen(cache, prefix_length)
    row = []
    for nodes in node_counts:
        tree = _timing_tree(nodes, target.config.vocab_size)
        row.append(min(_timed_verify(target, tree, prefix_length, cache, capture, device) for _ in range(runs)))
        if max_tokens_per_round is not None and row[-1] > max_tokens_per_round * row[0]:
            break
    return row


def measure_draft_seconds(head: JetSpecDraftModel, target: PreTrainedModel, device: torch.device,
                          repeats: int = 3, batch_size: int = 1) -> float:
    """Seconds of one full-depth head forward (and its lm_head) for `batch_size` rows on a scratch drafter with a
    short context."""
    device = torch.device(device)
    drafter = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings(), batch_size=batch_size)
    context_length = MEASURED_PREFIX_LENGTHS[0]
    features = torch.zeros(batch_size, context_length, head.fc.in_features, dtype=head.fc.weight.dtype,
                           device=head.fc.weight.device)
    anchor = _fixed_tokens(target.config.vocab_size, 1, device)[None].expand(batch_size, -1)
    seconds = []
    with torch.inference_mode():
        drafter.add_context(features)
        for _ in range(repeats + 1):
            synchronize(device)
            started = time.perf_counter()
            drafter.draft(anchor, head.config.block_size - 1)
            synchronize(device)
            seconds.append(time.perf_counter() - started)
    # The first run also projects the context: the others time a round's draft.
    return min(seconds[1:])


def _timed_verify(target, tree: DraftTree, prefix_length: int, cache, capture, device) -> float:
    synchronize(device)
    started = time.perf_counter()
    verify_tree(target, tree, prefix_length, cache, capture, device)
    synchronize(device)
    seconds = time.perf_counter() - started
    truncate_cache(cache, prefix_length)  # the tree's columns, padding included
    return seconds


def _timing_tree(nodes: int, vocab_size: int) -> DraftTree:
    """A tree shaped like a round's: four children per node, best first, so a few levels deep."""
    parents = [-1] + [(node - 1) // 4 for node in range(1, nodes)]
    depths = [0]
    for node in range(1, nodes):
        depths.append(depths[parents[node]] + 1)
    return DraftTree(tokens=_fixed_tokens(vocab_size, nodes).tolist(), parents=parents, depths=depths,
                     scores=[0.0] * nodes)


def _fixed_tokens(vocab_size: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """`length` ordinary token ids of the vocabulary, the same every time (ids 0-2 are often special)."""
    first = min(3, vocab_size - 1)
    return torch.arange(length, device=device) % (vocab_size - first) + first


def _lengthen(cache: DynamicCache, length: int) -> None:
    """Repeat the cache's rows until it holds `length` positions (their values do not matter for timing)."""
    for layer in cache.layers:
        current = layer.keys.shape[-2]
        if current < length:
            copies = math.ceil(length / current)
            layer.keys = layer.keys.repeat(1, 1, copies, 1)[..., :length, :].contiguous()
            layer.values = layer.values.repeat(1, 1, copies, 1)[..., :length, :].contiguous()


def _safe_prefix_lengths(target: PreTrainedModel, prefix_lengths: tuple[int, ...], max_nodes: int) -> tuple[int, ...]:
    rope = getattr(target.config, "rope_parameters", None) or {}
    # One set of parameters, or one per layer type.
    per_type = [value for value in rope.values() if isinstance(value, dict)]
    rope_types = {rope.get("rope_type"), *(value.get("rope_type") for value in per_type)}
    if not rope_types & _STATEFUL_ROPE_TYPES:
        return prefix_lengths
    longest = target.config.max_position_embeddings - max_nodes - 1
    kept = tuple(length for length in prefix_lengths if length <= longest)
    return kept or (max(1, min(prefix_lengths[0], longest)),)


def _disk_path(key: str) -> Path | None:
    folder = os.environ.get(COST_CACHE_ENV)
    return Path(folder) / f"verify-costs-{key}.json" if folder else None


def _read_disk(key: str, signature: dict) -> VerifyCosts | None:
    path = _disk_path(key)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("signature") != signature:
            return None
        return VerifyCosts.from_dict(data["costs"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning(f"JetSpec: ignoring the unreadable cost table {path} ({error}); measuring again.")
        return None


def _write_disk(key: str, signature: dict, costs: VerifyCosts) -> None:
    path = _disk_path(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"signature": signature, "costs": costs.to_dict()}, indent=1))
        partial.replace(path)
    except OSError as error:
        logger.warning(f"JetSpec: could not write the cost table to {path} ({error}); it is kept for this process.")


__all__ = [
    "COST_CACHE_ENV",
    "MEASURED_PREFIX_LENGTHS",
    "cost_signature",
    "forget_verify_costs",
    "measure_draft_seconds",
    "measure_verify_costs",
    "remember_verify_costs",
    "verify_costs_for",
]
