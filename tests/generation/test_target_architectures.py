"""Llama, Qwen2 and Mistral targets get what Qwen3 targets get: plain decoding's tokens through the public API at
every budget, plain sampling's distribution, batches, a returned cache that continues, and the same refusals."""

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare
from transformers import GenerationMixin

import jetspec_hf
from jetspec_hf.bench.synthetic.timing import oracle_generation
from tiny_models import ARCHITECTURES, random_prompt, refuse_forwards, tiny_head, tiny_target

PROMPTS = [(seed, length) for seed, length in zip(range(4), (1, 5, 12, 30))]


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch_pair(request):
    target = jetspec_hf.enable(tiny_target(architecture=request.param))
    return target, tiny_head(target)


@pytest.mark.parametrize("budget", [1, 4, 16, "auto"])
def test_greedy_equals_plain(arch_pair, budget):
    target, head = arch_pair
    for seed, length in PROMPTS:
        prompt = random_prompt(seed, length)
        for max_new_tokens in (1, 17):
            expected = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens)
            got = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens, assistant_model=head,
                                  tree_budget=budget)
            assert torch.equal(got, expected), f"prompt {seed}, {max_new_tokens} tokens"


def test_greedy_equals_plain_with_prompt_lookup_and_eager(arch_pair):
    target, head = arch_pair
    target.set_attn_implementation("eager")
    try:
        for seed, length in PROMPTS:
            prompt = random_prompt(seed, length)
            expected = target.generate(prompt, do_sample=False, max_new_tokens=20)
            got = target.generate(prompt, do_sample=False, max_new_tokens=20, assistant_model=head, tree_budget=8,
                                  prompt_lookup_num_tokens=4)
            assert torch.equal(got, expected), f"prompt {seed}"
    finally:
        target.set_attn_implementation("sdpa")


@pytest.mark.parametrize("budget", [4, 16])
def test_accepted_drafts_are_plain_decodings_tokens(arch_pair, budget):
    """A drafter that plants the true continuation: rounds accept several tokens, and the output is still
    plain decoding's (a loop that rejected every draft would fail the first assertion)."""
    target, head = arch_pair
    prompt = random_prompt(7, 9)
    reference = GenerationMixin.generate(target, prompt, do_sample=False, max_new_tokens=40)
    run = oracle_generation(target, head, prompt, reference, budget, [0.8], 40)
    assert max(run.accepted_lengths) >= 3
    assert torch.equal(run.sequences, reference)


def test_batch_rows_equal_their_plain_runs(arch_pair):
    target, head = arch_pair
    prompts = [random_prompt(seed, length)[0] for seed, length in ((1, 3), (2, 11), (3, 7))]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):], mask[row, width - len(prompt):] = prompt, 1
    expected = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=15, pad_token_id=0)
    got = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=15, pad_token_id=0,
                          assistant_model=head, tree_budget=8)
    assert torch.equal(got, expected)


def test_returned_cache_continues_a_chat(arch_pair):
    target, head = arch_pair
    prompt = random_prompt(4, 6)
    first = target.generate(prompt, do_sample=False, max_new_tokens=8, assistant_model=head, tree_budget=8,
                            return_dict_in_generate=True)
    follow_up = torch.cat([first.sequences, random_prompt(5, 4)], dim=1)
    continued = target.generate(follow_up, cache=first.cache, do_sample=False, max_new_tokens=8,
                                assistant_model=head, tree_budget=8)
    fresh = target.generate(follow_up, do_sample=False, max_new_tokens=8)
    assert torch.equal(continued, fresh)


@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_sampling_distribution_equals_plain(architecture):
    """The first two sampled tokens of a 12-token target: tree path and plain sampling against the exact joint
    distribution computed from the target's own probabilities (chi-square, seeded)."""
    torch.manual_seed(0)
    config_class, model_class = ARCHITECTURES[architecture]
    config = config_class(vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=64,
                          tie_word_embeddings=True, eos_token_id=None, pad_token_id=None, bos_token_id=None)
    target = jetspec_hf.enable(model_class(config).eval())
    with torch.no_grad():
        target.lm_head.weight.mul_(4.0)
    head = tiny_head(target, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                     dflash_config={"mask_token_id": 3, "causal_head": True, "target_layer_ids": [0, 1]})
    prompt = torch.tensor([[5, 7, 9]])
    with torch.no_grad():
        first = torch.softmax(target(prompt).logits[0, -1], -1)
        joint = {}
        for a in range(12):
            second = torch.softmax(target(torch.cat([prompt, torch.tensor([[a]])], 1)).logits[0, -1], -1)
            for b in range(12):
                joint[(a, b)] = float(first[a] * second[b])
    keys = [key for key, p in joint.items() if p * 600 >= 5]  # cells a chi-square can test
    for label, kwargs in (("tree", dict(assistant_model=head, tree_budget=8)), ("plain", {})):
        torch.manual_seed(1)
        counts = Counter()
        for _ in range(600):
            out = target.generate(prompt, do_sample=True, top_k=0, max_new_tokens=2, **kwargs)
            counts[tuple(out[0, 3:].tolist())] += 1
        observed = [counts[key] for key in keys] + [600 - sum(counts[key] for key in keys)]
        expected = [joint[key] * 600 for key in keys]
        expected.append(600 - sum(expected))
        assert chisquare(observed, expected).pvalue > 1e-3, label


def test_sliding_window_refused_only_when_the_sequence_can_outgrow_it(monkeypatch):
    target = jetspec_hf.enable(tiny_target(architecture="mistral", sliding_window=16))
    head = tiny_head(target)
    prompt = random_prompt(0, 6)
    expected = target.generate(prompt, do_sample=False, max_new_tokens=10)
    assert torch.equal(target.generate(prompt, do_sample=False, max_new_tokens=10, assistant_model=head), expected)
    refuse_forwards(monkeypatch, target)
    with pytest.raises(ValueError, match="sliding window of 16"):
        target.generate(prompt, do_sample=False, max_new_tokens=11, assistant_model=head)
