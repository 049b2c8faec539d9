"""Heads in the DFlash layout of vLLM's `speculators` library: exported from here, loaded here, and read by
speculators' own classes when that library is installed."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from jetspec_hf import JetSpecDraftModel
from jetspec_hf.export import main as export_main
from jetspec_hf.speculators_format import export_notes, jetspec_config_dict
from tiny_models import MASK_TOKEN_ID, VOCAB_SIZE, tiny_head, tiny_target

DRAFT_VOCAB_SIZE = 20
TAPPED_LAYERS = [0, 2]  # of the tiny target's 4: aux_hidden_state_layer_ids [1, 3]


@pytest.fixture(scope="module")
def target_folder(tmp_path_factory):
    """The tiny target saved to a folder: the exported heads name it as their verifier."""
    folder = tmp_path_factory.mktemp("target")
    tiny_target().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def target(target_folder):
    return AutoModelForCausalLM.from_pretrained(target_folder).eval()


def make_head(target, causal: bool, draft_vocabulary: bool, **overrides) -> JetSpecDraftModel:
    """A tiny head; with a draft vocabulary, its ids in frequency order (not sorted), as training leaves them."""
    if draft_vocabulary:
        overrides["draft_vocab_size"] = DRAFT_VOCAB_SIZE
    head = tiny_head(target, causal=causal, target_layer_ids=TAPPED_LAYERS, **overrides)
    if draft_vocabulary:
        with torch.no_grad():
            head.draft_vocab_ids.copy_(torch.randperm(VOCAB_SIZE, generator=torch.Generator().manual_seed(3))[
                :DRAFT_VOCAB_SIZE])
    return head


def draft_logits(head: JetSpecDraftModel, target) -> torch.Tensor:
    """The logits a head drafts for one block over a random context, scored by the target's lm_head on the head's
    draft vocabulary (every other token -inf), as tree decoding scores them."""
    generator = torch.Generator().manual_seed(7)
    context = torch.randn(1, 5, len(head.config.target_layer_ids) * head.config.hidden_size, generator=generator)
    block = torch.tensor([[5] + [MASK_TOKEN_ID] * (head.config.block_size - 1)])
    with torch.no_grad():
        rows = head(target.get_input_embeddings()(block), context).last_hidden_state[:, 1:]
        logits = target.get_output_embeddings()(rows)
    if head.draft_vocab_ids is None:
        return logits
    ranked = torch.full_like(logits, float("-inf"))
    ranked[..., head.draft_vocab_ids] = logits[..., head.draft_vocab_ids]
    return ranked


def exported(head, target, folder):
    head.save_pretrained(folder, checkpoint_format="speculators", target=target)
    return json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")


@pytest.mark.parametrize("draft_vocabulary", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_a_round_trip_drafts_the_same_logits_with_the_mask_speculators_runs(tmp_path, target, causal,
                                                                          draft_vocabulary):
    head = make_head(target, causal, draft_vocabulary)
    exported(head, target, tmp_path / "out")
    loaded = JetSpecDraftModel.from_pretrained(tmp_path / "out")
    # speculators attends bidirectionally in every full-attention layer: that is the head the folder holds.
    assert loaded.config.causal_head is False
    as_speculators_runs_it = copy.deepcopy(head)
    as_speculators_runs_it.config.dflash_config["causal_head"] = False
    assert torch.equal(draft_logits(loaded, target), draft_logits(as_speculators_runs_it, target))
    if causal:  # the mask matters: the causal original drafts otherwise
        assert not torch.equal(draft_logits(loaded, target), draft_logits(head, target))
    assert loaded.config.target_layer_ids == TAPPED_LAYERS
    assert loaded.config.num_target_layers == target.config.num_hidden_layers
    assert loaded.config.draft_vocab_size == (DRAFT_VOCAB_SIZE if draft_vocabulary else None)
    if draft_vocabulary:
        assert loaded.draft_vocab_ids.tolist() == sorted(head.draft_vocab_ids.tolist())


@pytest.mark.parametrize("draft_vocabulary", [False, True])
def test_the_written_folder_follows_the_layout(tmp_path, target, target_folder, draft_vocabulary):
    head = make_head(target, causal=False, draft_vocabulary=draft_vocabulary)
    config, weights = exported(head, target, tmp_path / "out")
    assert "model_type" not in config and config["speculators_model_type"] == "dflash"
    assert config["aux_hidden_state_layer_ids"] == [index + 1 for index in TAPPED_LAYERS]
    assert (config["block_size"], config["mask_token_id"]) == (head.config.block_size, MASK_TOKEN_ID)
    assert config["draft_vocab_size"] == (DRAFT_VOCAB_SIZE if draft_vocabulary else VOCAB_SIZE)
    assert config["sample_from_anchor"] is False and config["target_hidden_size"] is None
    layers = config["transformer_layer_config"]
    assert layers["model_type"] == "qwen3" and layers["num_hidden_layers"] == head.config.num_hidden_layers
    assert layers["vocab_size"] == VOCAB_SIZE and layers["hidden_size"] == head.config.hidden_size
    proposal = config["speculators_config"]["proposal_methods"][0]
    assert (proposal["proposal_type"], proposal["speculative_tokens"]) == ("greedy", head.config.block_size - 1)
    assert config["speculators_config"]["verifier"] == {"name_or_path": str(target_folder),
                                                        "architectures": ["Qwen3ForCausalLM"]}

    body = set(head.state_dict()) - {"draft_vocab_ids"}
    mapping = {"d2t", "t2d", "lm_head.weight"} if draft_vocabulary else set()
    assert set(weights) == body | mapping  # no embed_tokens: speculators rebuilds it from the verifier
    if draft_vocabulary:
        ids = sorted(head.draft_vocab_ids.tolist())
        d2t, t2d = weights["d2t"], weights["t2d"]
        assert d2t.dtype == torch.long and t2d.dtype == torch.bool and t2d.shape == (VOCAB_SIZE,)
        assert (torch.arange(DRAFT_VOCAB_SIZE) + d2t).tolist() == ids  # offsets: target id = i + d2t[i]
        assert t2d.nonzero().flatten().tolist() == ids
        assert torch.equal(weights["lm_head.weight"], target.lm_head.weight[ids])


def test_a_head_trained_by_speculators_loads_with_its_causal_sliding_layers(tmp_path, target):
    """speculators' trainer makes every draft layer sliding-window, causal inside the block by default."""
    head = make_head(target, causal=True, draft_vocabulary=False, sliding_window=64,
                     layer_types=["sliding_attention", "sliding_attention"])
    config, _ = exported(head, target, tmp_path / "out")
    assert config["sliding_window_non_causal"] is False and config["transformer_layer_config"]["use_sliding_window"]
    loaded = JetSpecDraftModel.from_pretrained(tmp_path / "out")
    assert loaded.config.causal_head is True and loaded.config.layer_windows == [64, 64]
    assert torch.equal(draft_logits(loaded, target), draft_logits(head, target))


@pytest.mark.parametrize("change, field", [
    ({"sample_from_anchor": True}, "sample_from_anchor"),
    ({"speculators_model_type": "eagle3"}, "speculators_model_type"),
    ({"aux_hidden_state_layer_ids": [0, 3]}, "aux_hidden_state_layer_ids"),
    ({"target_hidden_size": 128}, "target_hidden_size"),
    ({"transformer_layer_config": {"model_type": "gemma3"}}, "transformer_layer_config.model_type"),
    ({"transformer_layer_config": {"layer_types": ["full_attention", "sliding_attention"], "sliding_window": 8,
                                   "use_sliding_window": True}, "sliding_window_non_causal": False},
     "sliding_window_non_causal"),
    ({"speculators_config": {"verifier_accept_k": 3}}, "verifier_accept_k"),
    ({"speculators_config": {"speculative_tokens": 9}}, "speculative_tokens"),
])
def test_what_a_jetspec_head_cannot_represent_is_refused_naming_the_field(tmp_path, target, change, field):
    config, _ = exported(make_head(target, causal=False, draft_vocabulary=False), target, tmp_path / "out")
    for key, value in change.items():
        if key == "transformer_layer_config":
            config[key].update(value)
        elif key == "speculators_config":
            config[key]["proposal_methods"][0].update(value)
        else:
            config[key] = value
    with pytest.raises(ValueError, match=field):
        jetspec_config_dict(config)


def test_a_shorter_proposal_becomes_the_heads_tree_depth(tmp_path, target):
    config, _ = exported(make_head(target, causal=False, draft_vocabulary=False), target, tmp_path / "out")
    config["speculators_config"]["proposal_methods"][0]["speculative_tokens"] = 3
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    assert JetSpecDraftModel.from_pretrained(tmp_path / "out").generation_config.tree_depth == 3


def test_lm_head_rows_that_are_not_the_verifiers_are_refused(tmp_path, target):
    exported(make_head(target, causal=False, draft_vocabulary=True), target, tmp_path / "out")
    weights = load_file(tmp_path / "out" / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] + 0.5
    save_file(weights, tmp_path / "out" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not made for its verifier.*lm_head.weight differs"):
        JetSpecDraftModel.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize("draft_vocabulary, declared, error", [
    (False, None, r"draft_vocab_size is 32000 \(speculators' default"),
    (False, 40, "declares draft_vocab_size 40 for a 96-token target but its weights hold no d2t / t2d"),
    (True, VOCAB_SIZE, "declares draft_vocab_size 96 .* but its weights hold a mapping of 20 tokens"),
])
def test_a_declared_draft_vocabulary_the_weights_do_not_hold_is_refused(tmp_path, target, draft_vocabulary,
                                                                         declared, error):
    config, _ = exported(make_head(target, causal=False, draft_vocabulary=draft_vocabulary), target, tmp_path / "out")
    if declared is None:
        config.pop("draft_vocab_size")  # speculators' default: 32000
    else:
        config["draft_vocab_size"] = declared
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=error):
        JetSpecDraftModel.from_pretrained(tmp_path / "out")


def test_a_verifier_not_on_this_machine_leaves_the_rows_unchecked_and_says_so(tmp_path, target, capsys):
    config, _ = exported(make_head(target, causal=False, draft_vocabulary=True), target, tmp_path / "out")
    config["speculators_config"]["verifier"]["name_or_path"] = str(tmp_path / "elsewhere")
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    loaded = JetSpecDraftModel.from_pretrained(tmp_path / "out")
    assert loaded.config.draft_vocab_size == DRAFT_VOCAB_SIZE
    assert "were not compared" in capsys.readouterr().err


def test_a_head_that_taps_the_targets_last_layer_is_written_as_it_reads_it_with_a_warning(tmp_path, target):
    head = tiny_head(target, causal=False, target_layer_ids=[1, 3])
    config, _ = exported(head, target, tmp_path / "out")
    assert config["aux_hidden_state_layer_ids"] == [2, 4]  # 4: the raw output of the last of 4 layers
    assert JetSpecDraftModel.from_pretrained(tmp_path / "out").config.target_layer_ids == [1, 3]
    warnings = [message for message, is_warning in export_notes(head.config, 4) if is_warning]
    assert len(warnings) == 1 and "aux_hidden_state_layer_ids has 4" in warnings[0]
    assert not [is_warning for _, is_warning in export_notes(make_head(target, False, False).config, 4)]


def test_export_needs_the_target_it_was_trained_for(tmp_path, target):
    head = make_head(target, False, False)
    with pytest.raises(ValueError, match="pass `target=`"):
        head.save_pretrained(tmp_path / "out", checkpoint_format="speculators")
    deeper = copy.deepcopy(target)
    deeper.config.num_hidden_layers = 6
    with pytest.raises(ValueError, match="does not fit this target: trained for a 4-layer target"):
        head.save_pretrained(tmp_path / "out", checkpoint_format="speculators", target=deeper)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("causal", [True, False])
def test_the_command_exports_and_warns_about_a_causal_head(tmp_path, target, target_folder, capsys, causal):
    make_head(target, causal, draft_vocabulary=True).save_pretrained(tmp_path / "head")
    assert export_main(["--head", str(tmp_path / "head"), "--output", str(tmp_path / "out"), "--format",
                        "speculators", "--target", str(target_folder)]) == 0
    captured = capsys.readouterr()
    assert ("WARNING" in captured.err and "BIDIRECTIONALLY" in captured.err) is causal
    assert "speculators layout" in captured.out and "d2t / t2d" in captured.out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["speculators_config"]["verifier"]["name_or_path"] == str(target_folder.resolve())
    assert JetSpecDraftModel.from_pretrained(tmp_path / "out").config.draft_vocab_size == DRAFT_VOCAB_SIZE


def test_the_command_needs_a_target_for_the_speculators_layout(tmp_path, target, capsys):
    make_head(target, False, False).save_pretrained(tmp_path / "head")
    with pytest.raises(SystemExit) as raised:
        export_main(["--head", str(tmp_path / "head"), "--output", str(tmp_path / "out"), "--format", "speculators"])
    assert raised.value.code == 2 and "--format speculators needs --target" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_speculators_reads_the_export_with_its_own_classes(tmp_path, target, target_folder):
    pytest.importorskip("speculators", reason="speculators is not installed (0.9.0 pins transformers<=5.19, "
                        "older than this package needs); the README records a run against it")
    from speculators.models.dflash import DFlashDraftModel, DFlashSpeculatorConfig

    head = make_head(target, causal=False, draft_vocabulary=True)
    exported(head, target, tmp_path / "out")
    config = DFlashSpeculatorConfig.from_pretrained(tmp_path / "out")
    assert config.aux_hidden_state_layer_ids == [1, 3] and config.draft_vocab_size == DRAFT_VOCAB_SIZE
    assert config.transformer_layer_config.num_hidden_layers == head.config.num_hidden_layers
    model = DFlashDraftModel.from_pretrained(tmp_path / "out")
    ids = sorted(head.draft_vocab_ids.tolist())
    assert (torch.arange(DRAFT_VOCAB_SIZE) + model.d2t).tolist() == ids
    assert torch.equal(model.lm_head.weight, target.lm_head.weight[ids])
    assert torch.equal(model.embed_tokens.weight, target.get_input_embeddings().weight)  # from the verifier
    assert torch.equal(model.fc.weight, head.fc.weight)
