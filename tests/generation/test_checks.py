"""Every unsupported case fails before any forward pass, with a message naming what is wrong."""

import pytest
import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

import jetspec_hf
from tiny_models import random_prompt, refuse_forwards, tiny_head, tiny_target


@pytest.mark.parametrize(
    "head_overrides, message",
    [
        (dict(hidden_size=32, head_dim=8), "does not fit this target: hidden size 32 where the target has 64"),
        (dict(vocab_size=100), "vocabulary of 100 tokens where the target has 96"),
        (dict(target_layer_ids=[1, 7]), "taps target layers \\[7\\]"),
        (dict(num_target_layers=12), "trained for a 12-layer target"),
    ],
)
def test_head_that_does_not_fit_the_target(pair, monkeypatch, head_overrides, message):
    target, _ = pair
    layer_ids = head_overrides.pop("target_layer_ids", None)
    bad_head = tiny_head(target, target_layer_ids=layer_ids, **head_overrides)
    if "num_target_layers" in head_overrides:
        bad_head = tiny_head(target, target_layer_ids=[0, 2], **head_overrides)
    refuse_forwards(monkeypatch, target)
    with pytest.raises(ValueError, match=message):
        target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=bad_head)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tree_budget=0), "tree_budget"),
        (dict(tree_budget="fast"), "or 'auto'"),
        (dict(tree_width=0), "tree_width"),
        (dict(tree_depth=0), "tree_depth"),
        (dict(tree_depth=8), "tree_depth"),
        (dict(tree_expansion="beam"), "tree_expansion"),
        (dict(prompt_lookup_num_tokens=4, tree_expansion="fanout"), "node-level trees only"),
    ],
)
def test_tree_settings_out_of_range(pair, monkeypatch, kwargs, message):
    target, head = pair
    refuse_forwards(monkeypatch, target)
    with pytest.raises(ValueError, match=message):
        target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=head, **kwargs)


def test_unsupported_architecture():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=64, n_layer=2, n_head=4))
    with pytest.raises(TypeError, match="Qwen3ForCausalLM, Qwen3MoeForCausalLM, LlamaForCausalLM.*GPT2LMHeadModel"):
        jetspec_hf.enable(gpt2)


def test_sliding_window_target_beyond_its_window(monkeypatch):
    target = jetspec_hf.enable(tiny_target(use_sliding_window=True, sliding_window=16, max_window_layers=0))
    refuse_forwards(monkeypatch, target)
    with pytest.raises(ValueError, match="sliding window of 16 positions, and this call can reach 25"):
        target.generate(random_prompt(0, 5), max_new_tokens=20, assistant_model=tiny_head(target))


def test_paged_attention_target_is_refused(pair, monkeypatch):
    target, head = pair
    target.config._attn_implementation = "paged|sdpa"
    try:
        refuse_forwards(monkeypatch, target)
        with pytest.raises(ValueError, match="cannot run tree verification"):
            target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=head)
    finally:
        target.config._attn_implementation = "sdpa"


def test_head_on_a_target_that_was_not_enabled():
    target = tiny_target()
    head = tiny_head(target)
    with pytest.raises(jetspec_hf.modeling_jetspec.JetSpecNotEnabledError, match=r"jetspec_hf.enable\(target\)"):
        target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=head)


def test_a_head_left_in_its_config_dtype_next_to_a_float32_target_is_reported_once(tmp_path, caplog):
    target = jetspec_hf.enable(tiny_target())
    tiny_head(target).to(torch.bfloat16).save_pretrained(tmp_path)  # bf16 weights and config, as released heads
    loaded_default = jetspec_hf.JetSpecDraftModel.from_pretrained(tmp_path)  # no dtype: the config's bfloat16
    assert loaded_default.dtype == torch.bfloat16
    prompt = random_prompt(0, 5)
    with caplog.at_level("WARNING"):
        for _ in range(3):
            target.generate(prompt, do_sample=False, max_new_tokens=4, assistant_model=loaded_default)
    warnings = [record for record in caplog.records if "dtype=target.dtype" in record.getMessage()]
    assert len(warnings) == 1 and "torch.bfloat16" in warnings[0].getMessage()

    caplog.clear()
    matching = jetspec_hf.JetSpecDraftModel.from_pretrained(tmp_path, dtype=torch.float32)
    chosen = jetspec_hf.JetSpecDraftModel.from_pretrained(tmp_path, dtype=torch.bfloat16)  # asked for: kept quiet
    with caplog.at_level("WARNING"):
        for head_variant in (matching, chosen):
            target.generate(prompt, do_sample=False, max_new_tokens=4, assistant_model=head_variant)
    assert not [record for record in caplog.records if "JetSpec" in record.getMessage()]


def _tree_size(target, head, **kwargs):
    out = target.generate(random_prompt(0, 6), do_sample=False, max_new_tokens=10, assistant_model=head,
                          return_dict_in_generate=True, **kwargs)
    return max(out.tree_sizes)


def test_tree_settings_resolve_like_generation_arguments(tmp_path):
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    head.generation_config.tree_budget = 9
    head.save_pretrained(tmp_path)
    head = jetspec_hf.JetSpecDraftModel.from_pretrained(tmp_path, dtype=torch.float32)
    assert head.generation_config.tree_budget == 9  # shipped in the head folder's generation_config.json
    assert _tree_size(target, head) == 9
    target.generation_config.tree_budget = 7
    try:
        assert _tree_size(target, head) == 7  # the target's generation config beats the head's defaults
        assert _tree_size(target, head, generation_config=GenerationConfig(tree_budget=5, max_new_tokens=10)) == 5
        assert _tree_size(target, head, generation_config=GenerationConfig(tree_budget=5), tree_budget=3) == 3
    finally:
        del target.generation_config.tree_budget


def test_a_version_0_1_folder_keeps_its_tree_defaults_from_config_json(tmp_path):
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target, tree_budget=6)  # where version 0.1 kept them
    assert head.generation_config.tree_budget == 6
    assert _tree_size(target, head) == 6



@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tree_budget=True), "tree_budget"),
        (dict(tree_width=True), "tree_width"),
        (dict(tree_depth=True), "tree_depth"),
        (dict(prompt_lookup_num_tokens=True), "prompt_lookup_num_tokens"),
        (dict(prompt_lookup_num_tokens=-1), r">= 0 .*0 adds none"),
        (dict(tree_budget=10000), "beyond 256"),
        (dict(speculation_type="dflash"), "speculation_type='dflash'"),
    ],
)
def test_loose_values_are_refused_before_any_work(pair, monkeypatch, kwargs, message):
    target, head = pair
    refuse_forwards(monkeypatch, target)
    with pytest.raises(ValueError, match=message):
        target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=head, **kwargs)


def test_prompt_lookup_zero_means_no_branch(pair):
    target, head = pair
    prompt = random_prompt(2, 7)
    out = target.generate(prompt, do_sample=False, max_new_tokens=10, assistant_model=head, tree_budget=8,
                          prompt_lookup_num_tokens=0, return_dict_in_generate=True)
    assert out.lookup_lengths is None
    assert torch.equal(out.sequences, target.generate(prompt, do_sample=False, max_new_tokens=10))


def test_a_static_cache_too_small_says_by_how_much(pair, monkeypatch):
    from transformers import StaticCache

    target, head = pair
    cache = StaticCache(config=target.config, max_cache_len=12)
    refuse_forwards(monkeypatch, target)
    with pytest.raises(ValueError, match=r"holds 12 positions, but this call can need 24.*12 too few"):
        target.generate(random_prompt(0, 5), max_new_tokens=20, assistant_model=head, cache=cache)


def test_int32_prompts_come_back_as_int64_like_plain(pair):
    target, head = pair
    prompt = random_prompt(1, 6).to(torch.int32)
    plain = target.generate(prompt, do_sample=False, max_new_tokens=6)
    got = target.generate(prompt, do_sample=False, max_new_tokens=6, assistant_model=head, tree_budget=8)
    assert got.dtype == plain.dtype == torch.int64 and torch.equal(got, plain)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(block_size=1), "block_size must be an integer >= 2"),
        (dict(block_size=True), "block_size must be an integer >= 2"),
        (dict(dflash_config={"mask_token_id": 2, "causal_head": "yes", "target_layer_ids": [1]}), "causal_head"),
        (dict(dflash_config={"mask_token_id": 2.5, "causal_head": True, "target_layer_ids": [1]}), "mask_token_id"),
    ],
)
def test_head_configs_with_unusable_fields_are_refused(fields, message):
    from jetspec_hf import JetSpecConfig

    with pytest.raises(ValueError, match=message):
        JetSpecConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=96, num_target_layers=4,
                      **{"dflash_config": {"mask_token_id": 2, "causal_head": True}, **fields})


def test_a_released_format_config_with_another_model_type_is_refused(tmp_path, pair):
    import json

    from jetspec_hf import JetSpecDraftModel

    _, head = pair
    head.save_pretrained(tmp_path / "head", checkpoint_format="released")
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    config["model_type"] = "llama"
    (tmp_path / "head" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type: llama.*Qwen3 decoder layers"):
        JetSpecDraftModel.from_pretrained(tmp_path / "head")
