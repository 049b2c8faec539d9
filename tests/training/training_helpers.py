"""Helpers of the training tests: a repetitive corpus, JSONL writing, a tiny head config for a tiny target."""

from __future__ import annotations

import json
import random

from tiny_models import MASK_TOKEN_ID, VOCAB_SIZE

from jetspec_hf.training.heads import head_config_from_target


def repetitive_records(count: int = 48, seed: int = 0, prompt_length: int = 4) -> list[dict]:
    """Sequences that walk one of two fixed token cycles from a random phase: every next token is a fixed function
    of the current one, so a head learns to continue them within a few dozen steps."""
    cycles = [list(range(10, 16)), list(range(40, 47))]
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        cycle = cycles[rng.randrange(len(cycles))]
        phase, length = rng.randrange(len(cycle)), rng.randrange(40, 56)
        records.append({"input_ids": [cycle[(phase + i) % len(cycle)] for i in range(length)],
                        "prompt_length": prompt_length})
    return records


def write_jsonl(path, records) -> str:
    """Write records one JSON object a line; returns the path as a string."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return str(path)


def tiny_head_config(target, causal: bool = True, block_size: int = 6, layers=(1, 3)):
    """A one-layer head config for the tiny target, derived the way the recipe derives it."""
    return head_config_from_target(
        target.config, mask_token_id=MASK_TOKEN_ID, num_hidden_layers=1, intermediate_size=128, head_dim=16,
        block_size=block_size, target_layer_ids=list(layers), causal=causal,
    )
