"""The bundled trained pair (jetspec_hf/bundled/models): the stand-in for a real Qwen3 target and its released heads."""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.bundled import BUNDLED_MODELS, BUNDLED_PROMPTS
from jetspec_hf.prompts import read_jsonl_prompts

MODELS = BUNDLED_MODELS


@lru_cache(maxsize=None)
def bundled_target():
    """The bundled Qwen3 target in fp32, enabled for tree decoding, and its tokenizer."""
    target = AutoModelForCausalLM.from_pretrained(MODELS / "target", dtype=torch.float32).eval()
    return jetspec_hf.enable(target), AutoTokenizer.from_pretrained(MODELS / "target")


@lru_cache(maxsize=None)
def bundled_head(name: str = "jetspec_head") -> JetSpecDraftModel:
    """`jetspec_head` (causal) or `dflash_head` (bidirectional), in fp32."""
    return JetSpecDraftModel.from_pretrained(MODELS / name, dtype=torch.float32).eval()


def heldout_prompts(count: int) -> list[str]:
    """The first `count` held-out prompts (beginnings of standard-library files neither model trained on)."""
    return read_jsonl_prompts(BUNDLED_PROMPTS, "prompt", count)
