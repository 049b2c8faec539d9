"""The head loads the released checkpoint layout unchanged, saves a layout the released loader reads too, and
applies the configured block mask."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from jetspec_hf import JetSpecConfig, JetSpecDraftModel
from jetspec_hf.configuration_jetspec import default_target_layer_ids
from tiny_models import tiny_head, tiny_target

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE, VOCAB = 64, 2, 4, 2, 16, 128, 96
TAPPED = [0, 2]


def released_weights(seed=0):
    """Every tensor of a released 2-layer head, under the released names (no prefix)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.1

    weights = {"fc.weight": rand(HIDDEN, len(TAPPED) * HIDDEN), "hidden_norm.weight": 1 + rand(HIDDEN),
               "norm.weight": 1 + rand(HIDDEN)}
    for i in range(LAYERS):
        prefix = f"layers.{i}."
        weights.update({
            prefix + "self_attn.q_proj.weight": rand(HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.k_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.v_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.o_proj.weight": rand(HIDDEN, HEADS * HEAD_DIM),
            prefix + "self_attn.q_norm.weight": 1 + rand(HEAD_DIM),
            prefix + "self_attn.k_norm.weight": 1 + rand(HEAD_DIM),
            prefix + "mlp.gate_proj.weight": rand(INTERMEDIATE, HIDDEN),
            prefix + "mlp.up_proj.weight": rand(INTERMEDIATE, HIDDEN),
            prefix + "mlp.down_proj.weight": rand(HIDDEN, INTERMEDIATE),
            prefix + "input_layernorm.weight": 1 + rand(HIDDEN),
            prefix + "post_attention_layernorm.weight": 1 + rand(HIDDEN),
        })
    return weights


def write_released_checkpoint(folder, causal=True):
    """A folder exactly as the released JetSpec/DFlash heads are published (DESIGN §6)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["DFlashDraftModel"], "model_type": "qwen3", "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM, "intermediate_size": INTERMEDIATE, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "rope_theta": 1000000, "max_position_embeddings": 512, "vocab_size": VOCAB, "tie_word_embeddings": False,
        "attention_bias": False, "torch_dtype": "float32", "block_size": 8, "num_target_layers": 4,
        "bos_token_id": 1, "eos_token_id": 1,
        "dflash_config": {"causal_head": causal, "mask_token_id": 2, "target_layer_ids": TAPPED},
    }
    (folder / "config.json").write_text(json.dumps(config))
    weights = released_weights()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return weights


def test_released_checkpoint_loads_unchanged_and_round_trips(tmp_path):
    weights = write_released_checkpoint(tmp_path / "released", causal=False)
    head, info = JetSpecDraftModel.from_pretrained(tmp_path / "released", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = head.state_dict()
    assert set(state) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(state[name], tensor), name
    config = head.config
    assert config.block_size == 8 and config.num_target_layers == 4
    assert config.target_layer_ids == TAPPED and config.mask_token_id == 2 and config.causal_head is False
    assert config.rope_parameters["rope_theta"] == 1000000

    head.save_pretrained(tmp_path / "ours")
    saved_config = json.loads((tmp_path / "ours" / "config.json").read_text())
    for key in ("block_size", "num_target_layers", "dflash_config"):
        assert saved_config[key] == json.loads((tmp_path / "released" / "config.json").read_text())[key]
    saved_weights = load_file(str(tmp_path / "ours" / "model.safetensors"))
    assert set(saved_weights) == set(weights), "saved weight names must stay those of the released format"

    reloaded, info = JetSpecDraftModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert isinstance(AutoModel.from_pretrained(tmp_path / "ours"), JetSpecDraftModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "ours"), JetSpecConfig)


def test_plain_qwen3_config_is_refused_as_a_head(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 64}))
    with pytest.raises(ValueError, match="not a draft head"):
        JetSpecConfig.from_pretrained(folder)


def test_default_tapped_layers_follow_the_released_rule():
    assert default_target_layer_ids(36, 1) == [18]
    assert default_target_layer_ids(36, 5) == [1, 9, 17, 25, 33]
    config = JetSpecConfig(num_hidden_layers=5, num_target_layers=36, dflash_config={"mask_token_id": 3})
    assert config.target_layer_ids == [1, 9, 17, 25, 33]


def test_head_owns_no_embedding_and_no_lm_head():
    head = tiny_head(tiny_target())
    assert head.get_input_embeddings() is None
    assert not any("embed" in name or "lm_head" in name for name in head.state_dict())


def _block_outputs(head, block, context):
    with torch.no_grad():
        return head(noise_embeds=block, context_hidden_states=context).last_hidden_state


@pytest.mark.parametrize("causal", [True, False])
def test_block_mask_is_causal_for_jetspec_and_full_for_dflash(causal):
    head = tiny_head(tiny_target(), causal=causal)
    block = torch.randn(1, 8, HIDDEN)
    context = torch.randn(1, 5, len(head.config.target_layer_ids) * HIDDEN)
    changed = block.clone()
    changed[0, 5] += 1.0  # perturb block position 5
    before, after = _block_outputs(head, block, context), _block_outputs(head, changed, context)
    earlier_positions_changed = not torch.allclose(before[0, :5], after[0, :5])
    assert earlier_positions_changed is (not causal)
    assert not torch.allclose(before[0, 5:], after[0, 5:])
    # Every block position sees the whole context.
    other_context = context.clone()
    other_context[0, 0] += 1.0
    assert not torch.allclose(before[0, 0], _block_outputs(head, block, other_context)[0, 0])


def test_eager_and_sdpa_heads_agree():
    target = tiny_target()
    head = tiny_head(target)
    block = torch.randn(1, 8, HIDDEN)
    context = torch.randn(1, 6, len(head.config.target_layer_ids) * HIDDEN)
    sdpa = _block_outputs(head, block, context)
    head.set_attn_implementation("eager")
    torch.testing.assert_close(_block_outputs(head, block, context), sdpa, rtol=1e-5, atol=1e-5)
