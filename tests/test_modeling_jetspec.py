"""The head loads the released checkpoint layout unchanged, saves a layout the released loader reads too, and
applies the configured block mask."""

import functools
import inspect
import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, GenerationConfig, GenerationMixin, Qwen3Model

from jetspec_hf import JetSpecConfig, JetSpecDraftModel
from jetspec_hf.cli import main as cli_main
from jetspec_hf.configuration_jetspec import default_target_layer_ids
from jetspec_hf.modeling_jetspec import JetSpecNotEnabledError
from tiny_models import random_prompt, tiny_head, tiny_target

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


def released_config(causal=True, dtype_key="dtype"):
    """The config.json of a released head, with every key transformers 4.57 writes for a Qwen3 draft head (sorted,
    as it writes them). Published repositories also carry an `auto_map` to their own modeling file, which is code of
    theirs rather than part of the checkpoint format; `dtype` was `torch_dtype` before transformers 4.56."""
    config = {
        "architectures": ["DFlashDraftModel"], "attention_bias": False, "attention_dropout": 0.0, "block_size": 8,
        "bos_token_id": 1, "dflash_config": {"causal_head": causal, "mask_token_id": 2, "target_layer_ids": TAPPED},
        dtype_key: "float32", "eos_token_id": 1, "head_dim": HEAD_DIM, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INTERMEDIATE, "layer_types": ["full_attention"] * LAYERS,
        "max_position_embeddings": 512, "max_window_layers": LAYERS, "model_type": "qwen3",
        "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "num_key_value_heads": KV_HEADS,
        "num_target_layers": 4, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
        "sliding_window": None, "tie_word_embeddings": False, "transformers_version": "4.57.3", "use_cache": True,
        "use_sliding_window": False, "vocab_size": VOCAB,
    }
    return dict(sorted(config.items()))


def write_released_checkpoint(folder, causal=True, dtype_key="dtype"):
    """A folder exactly as the released JetSpec/DFlash heads are published (docs/design.md §6)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(released_config(causal, dtype_key), indent=2) + "\n")
    weights = released_weights()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return weights


@pytest.mark.parametrize("dtype_key", ["dtype", "torch_dtype"])
def test_released_checkpoint_loads_unchanged_and_round_trips(tmp_path, dtype_key):
    weights = write_released_checkpoint(tmp_path / "released", causal=False, dtype_key=dtype_key)
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


# ------------------------------------------------------------------------------------------ the head as a model


def test_head_answers_introspection_like_any_model(tmp_path):
    head = tiny_head(tiny_target())
    assert isinstance(head.generation_config, GenerationConfig)
    # Tools walk every attribute of a model; none of them may raise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecated properties
        members = dict(inspect.getmembers(head))
    assert isinstance(members["generation_config"], GenerationConfig)
    assert not head.can_generate()

    head.save_pretrained(tmp_path / "head")
    assert isinstance(JetSpecDraftModel.from_pretrained(tmp_path / "head").generation_config, GenerationConfig)
    # A generation_config.json beside the weights is read, as transformers reads it for generative models.
    GenerationConfig(max_new_tokens=7, eos_token_id=5).save_pretrained(tmp_path / "head")
    loaded = JetSpecDraftModel.from_pretrained(tmp_path / "head")
    assert (loaded.generation_config.max_new_tokens, loaded.generation_config.eos_token_id) == (7, 5)
    chosen = GenerationConfig(max_new_tokens=3)
    assert JetSpecDraftModel.from_pretrained(tmp_path / "head", generation_config=chosen).generation_config is chosen

    # Saved back when it says more than the model config; a plain head's folder gets no such file.
    loaded.save_pretrained(tmp_path / "again")
    assert GenerationConfig.from_pretrained(tmp_path / "again").max_new_tokens == 7
    head.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / "generation_config.json").exists()


def _refuse_forward(monkeypatch, *modules):
    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass ran before the error")

    for module in modules:
        monkeypatch.setattr(module, "forward", refuse)


@pytest.mark.parametrize("entry", ["instance", "class"])
def test_stock_assisted_decoding_with_a_head_says_to_enable_the_target(monkeypatch, entry):
    target = tiny_target()  # not enabled
    head = tiny_head(target)
    _refuse_forward(monkeypatch, target.model, head)
    generate = target.generate if entry == "instance" else functools.partial(GenerationMixin.generate, target)
    with pytest.raises(JetSpecNotEnabledError, match=r"jetspec_hf.enable\(target\)"):
        generate(random_prompt(0, 5), max_new_tokens=4, do_sample=False, assistant_model=head)
    with pytest.raises(JetSpecNotEnabledError, match="cannot generate by itself"):
        head.generate(random_prompt(0, 5))


def test_auto_model_refuses_a_released_head_and_names_the_loader(tmp_path):
    write_released_checkpoint(tmp_path / "released")
    with pytest.raises(ValueError, match=r"JetSpecDraftModel\.from_pretrained") as error:
        AutoModel.from_pretrained(tmp_path / "released")
    assert "released checkpoint format" in str(error.value)
    # Plain Qwen3 folders and configs still build plain Qwen3 models.
    target = tiny_target()
    target.model.save_pretrained(tmp_path / "plain")
    assert type(AutoModel.from_pretrained(tmp_path / "plain")) is Qwen3Model
    assert type(AutoModel.from_config(target.config)) is Qwen3Model


# ---------------------------------------------------------------------------------------------- released export


def _without(mapping, keys):
    return {key: value for key, value in mapping.items() if key not in keys}


def _safetensors_names(folder):
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        return list(weights.keys())


@pytest.mark.parametrize("causal", [True, False])
def test_export_writes_the_released_layout_and_loads_back_unchanged(tmp_path, causal):
    write_released_checkpoint(tmp_path / "released", causal=causal)
    head = JetSpecDraftModel.from_pretrained(tmp_path / "released")
    head.save_pretrained(tmp_path / "export", checkpoint_format="released")

    fixture = json.loads((tmp_path / "released" / "config.json").read_text())
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    # The same keys in the same (sorted) order, plus the causality keys vLLM reads (tests/test_engine_export.py).
    assert list(exported) == sorted([*fixture, "is_causal"])
    assert list(exported["dflash_config"]) == sorted([*fixture["dflash_config"], "causal"])
    for key, value in fixture.items():
        if key not in ("transformers_version", "dflash_config"):
            assert exported[key] == value, key
    assert exported["dflash_config"] == {**fixture["dflash_config"], "causal": causal}
    assert _safetensors_names(tmp_path / "export") == _safetensors_names(tmp_path / "released")
    assert sorted(tmp_path.joinpath("export").iterdir()) == [tmp_path / "export" / "config.json",
                                                               tmp_path / "export" / "model.safetensors"]

    reloaded = JetSpecDraftModel.from_pretrained(tmp_path / "export")
    bookkeeping = ("_name_or_path", "architectures")  # where it was loaded from, and the class that last saved it
    assert _without(reloaded.config.to_dict(), bookkeeping) == _without(head.config.to_dict(), bookkeeping)
    state = head.state_dict()
    assert all(torch.equal(tensor, state[name]) for name, tensor in reloaded.state_dict().items())


def test_export_of_a_trained_head_keeps_its_dtype_and_rope_variant(tmp_path):
    target = tiny_target(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5})
    head = tiny_head(target, target_layer_ids=[1, 2], rope_parameters=dict(target.config.rope_parameters))
    head = head.to(torch.bfloat16)
    head.save_pretrained(tmp_path / "export", checkpoint_format="released")
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    # The tiny head sets no bos/eos token: released configs leave unset token ids out.
    assert list(exported) == sorted([key for key in released_config() if key not in ("bos_token_id", "eos_token_id")]
                                    + ["is_causal"])
    assert exported["dtype"] == "bfloat16" and exported["rope_theta"] == 5e5
    assert exported["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    reloaded = JetSpecDraftModel.from_pretrained(tmp_path / "export", dtype="auto")
    assert reloaded.dtype == torch.bfloat16 and reloaded.config.rope_parameters == head.config.rope_parameters
    assert reloaded.config.dflash_config == head.config.dflash_config


def test_export_refuses_what_the_format_cannot_say(tmp_path):
    head = tiny_head(tiny_target(), num_target_layers=None, target_layer_ids=[0, 1])
    with pytest.raises(ValueError, match="needs num_target_layers"):
        head.save_pretrained(tmp_path / "export", checkpoint_format="released")
    assert not (tmp_path / "export").exists()
    with pytest.raises(ValueError, match="checkpoint_format"):
        head.save_pretrained(tmp_path / "export", checkpoint_format="dflash")


def test_export_command(tmp_path, capsys):
    write_released_checkpoint(tmp_path / "released")
    head = JetSpecDraftModel.from_pretrained(tmp_path / "released")
    head.save_pretrained(tmp_path / "ours")  # this package's format in, the released one out
    assert cli_main(["export", "--head", str(tmp_path / "ours"), "--output", str(tmp_path / "export")]) == 0
    assert "released format" in capsys.readouterr().out
    assert list(json.loads((tmp_path / "export" / "config.json").read_text())) == sorted([*released_config(),
                                                                                           "is_causal"])
    with pytest.raises(SystemExit):
        cli_main(["export", "--head", str(tmp_path / "ours"), "--output", str(tmp_path / "export")])
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["export", "--head", str(tmp_path / "ours"), "--output", str(tmp_path / "export"),
                     "--dtype", "bfloat16", "--overwrite"]) == 0
    assert json.loads((tmp_path / "export" / "config.json").read_text())["dtype"] == "bfloat16"
