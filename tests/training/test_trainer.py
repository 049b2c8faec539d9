"""The training loop: loss falls, the saved head reloads exactly, resume continues exactly, the feature cache is
equivalent to on-the-fly features, and bad input gives clear errors."""

import json

import pytest
import torch
from tiny_models import tiny_target, tiny_tokenizer
from training_helpers import repetitive_records, tiny_head_config

from jetspec_hf import JetSpecDraftModel
from jetspec_hf.training.__main__ import main
from jetspec_hf.training.trainer import HeadTrainer, HeadTrainingArguments, find_latest_checkpoint

TRAIN, EVAL = repetitive_records(48, seed=0), repetitive_records(8, seed=1)


def run(tmp_path, name, train=TRAIN, **overrides):
    settings = dict(output_dir=str(tmp_path / name), max_steps=40, per_device_batch_size=4, learning_rate=3e-3,
                    anchors_per_seq=6, log_steps=5, seed=0, progress=False)
    settings.update(overrides)
    target = tiny_target()
    trainer = HeadTrainer(target, tiny_tokenizer(), tiny_head_config(target), train, EVAL,
                          HeadTrainingArguments(**settings))
    return trainer, trainer.train()


def final_weights(folder):
    head = JetSpecDraftModel.from_pretrained(folder)
    return {k: v.clone() for k, v in head.state_dict().items()}


def test_loss_falls_and_saved_head_reloads(tmp_path):
    trainer, summary = run(tmp_path, "head", save_dtype="bfloat16")
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.6 * sum(losses[:2]) / 2
    final = summary["final_eval"]
    assert len(final["eval_top1_per_depth"]) == trainer.head_config.block_size - 1
    assert final["eval_top1_per_depth"][0] > 0.2  # a repeating pattern is learnable at depth 1

    folder = tmp_path / "head"
    head, info = JetSpecDraftModel.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    trained = dict(trainer.accelerator.unwrap_model(trainer.head).state_dict())
    # The training fc reads features divided by the fixed scale; the saved one has it folded in.
    trained["fc.weight"] = trained["fc.weight"] / trainer.scaled_fc.scales
    for name, tensor in head.state_dict().items():
        torch.testing.assert_close(tensor.float(), trained[name].to(torch.bfloat16).float())
    # Stored in bf16, and the config says so: dtype="auto" loads it back in bf16.
    assert next(JetSpecDraftModel.from_pretrained(folder, dtype="auto").parameters()).dtype == torch.bfloat16
    assert head.config.causal_head and head.config.target_layer_ids == [1, 3]
    assert head.config.vocab_size == trainer.target.config.vocab_size
    for name in ("tokenizer.json", "tokenizer_config.json", "training_args.json", "eval_results.json"):
        assert (folder / name).is_file()
    assert json.loads((folder / "training_args.json").read_text())["args"]["max_steps"] == 40


def test_the_saved_fc_computes_what_the_training_fc_computed_on_raw_features(tmp_path):
    trainer, _ = run(tmp_path, "head", max_steps=5)
    saved = JetSpecDraftModel.from_pretrained(tmp_path / "head", dtype=torch.float32)
    training_fc = trainer.accelerator.unwrap_model(trainer.head).fc
    raw = torch.randn(3, training_fc.in_features) * torch.linspace(0.1, 300.0, training_fc.in_features)
    with torch.no_grad():
        torch.testing.assert_close(saved.fc(raw), training_fc(raw), rtol=1e-4, atol=1e-4)
    assert not saved.fc._forward_pre_hooks  # the saved head is the plain architecture


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    run(tmp_path, "full", max_steps=12, save_steps=6, save_total_limit=3)
    assert find_latest_checkpoint(tmp_path / "full").name == "checkpoint-12"
    assert (tmp_path / "full" / "checkpoint-6" / "config.json").is_file()
    _, summary = run(tmp_path, "resumed", max_steps=12, resume=str(tmp_path / "full" / "checkpoint-6"))
    assert summary["resumed_from_step"] == 6 and summary["steps"] == 12
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], atol=1e-6, rtol=1e-5)


def test_a_run_started_from_a_saved_head_starts_at_its_weights_and_trains_on(tmp_path):
    first, first_summary = run(tmp_path, "first", max_steps=10)
    # A learning rate of 0 keeps the start: the second run saves exactly the weights it started from.
    _, still = run(tmp_path, "still", max_steps=2, learning_rate=0.0, init_from_head=str(tmp_path / "first"))
    saved, kept = final_weights(tmp_path / "first"), final_weights(tmp_path / "still")
    for name in saved:
        torch.testing.assert_close(kept[name], saved[name], atol=1e-6, rtol=1e-5)
    assert still["final_eval"]["eval_top1_per_depth"] == pytest.approx(first_summary["final_eval"]["eval_top1_per_depth"])
    # Trained on from there, it does better than the run it started from.
    _, more = run(tmp_path, "more", max_steps=30, init_from_head=str(tmp_path / "first"))
    assert more["final_eval"]["eval_loss"] < first_summary["final_eval"]["eval_loss"]


def test_a_saved_head_of_another_shape_is_refused_as_a_start(tmp_path):
    run(tmp_path, "first", max_steps=2)
    target = tiny_target()
    other = tiny_head_config(target, block_size=4, causal=False)
    args = HeadTrainingArguments(output_dir=str(tmp_path / "second"), max_steps=2, progress=False,
                                 init_from_head=str(tmp_path / "first"))
    with pytest.raises(ValueError, match=r"block_size 6 \(the flags give 4\).*causal_head True"):
        HeadTrainer(target, tiny_tokenizer(), other, TRAIN, EVAL, args)
    both = HeadTrainingArguments(output_dir=str(tmp_path / "third"), max_steps=2, progress=False,
                                 init_from_head=str(tmp_path / "first"), init_from_target=True)
    with pytest.raises(ValueError, match="pass one"):
        HeadTrainer(target, tiny_tokenizer(), tiny_head_config(target), TRAIN, EVAL, both)


class Payload:
    """A pickle that, when loaded, creates `marker`: what a tampered checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def plant_pickles(folder, marker):
    import pickle

    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"):
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))


def test_resume_reads_no_pickle_from_a_tampered_checkpoint(tmp_path):
    run(tmp_path, "full", max_steps=12, save_steps=6, save_total_limit=3)
    state = tmp_path / "full" / "checkpoint-6" / "state"
    assert sorted(p.suffix for p in state.iterdir()) == [".json", ".safetensors", ".safetensors"]
    marker = tmp_path / "payload-ran"
    plant_pickles(state, marker)
    _, summary = run(tmp_path, "resumed", max_steps=12, resume=str(state.parent))
    assert not marker.exists()
    assert summary["resumed_from_step"] == 6
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], atol=1e-6, rtol=1e-5)


def test_a_pickled_state_folder_is_refused_and_never_loaded(tmp_path):
    run(tmp_path, "full", max_steps=6, save_steps=6)
    state = tmp_path / "full" / "checkpoint-6" / "state"
    for path in state.iterdir():
        path.unlink()
    marker = tmp_path / "payload-ran"
    plant_pickles(state, marker)  # the layout accelerate.save_state writes, with a payload in every file
    with pytest.raises(ValueError, match="reads only JSON and safetensors"):
        run(tmp_path, "resumed", max_steps=12, resume=str(state.parent))
    assert not marker.exists()


def test_feature_cache_trains_like_on_the_fly_features(tmp_path):
    _, plain = run(tmp_path, "plain", max_steps=6, kl_weight=0.5)
    _, cached = run(tmp_path, "cached", max_steps=6, kl_weight=0.5, cache_features=str(tmp_path / "cache"))
    assert (tmp_path / "cache" / "train" / "manifest.json").is_file()
    assert (tmp_path / "cache" / "eval" / "manifest.json").is_file()
    assert cached["final_eval"]["eval_loss"] == pytest.approx(plain["final_eval"]["eval_loss"], rel=1e-4)
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "cached")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3)


def test_records_labels_reach_the_loss(tmp_path):
    # Labels equal to the tokens are the default, so they must train exactly as records without labels...
    same = [{**r, "labels": list(r["input_ids"])} for r in TRAIN]
    _, plain = run(tmp_path, "plain", max_steps=4)
    _, labelled = run(tmp_path, "labelled", train=same, max_steps=4)
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "labelled")
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    # ... and other labels must change what is learnt.
    shifted = [{**r, "labels": [t + 1 for t in r["input_ids"]]} for r in TRAIN]
    run(tmp_path, "shifted", train=shifted, max_steps=4)
    c = final_weights(tmp_path / "shifted")
    assert any(not torch.equal(a[name], c[name]) for name in a)


def test_cache_built_for_other_layers_is_refused(tmp_path):
    run(tmp_path, "first", max_steps=1, cache_features=str(tmp_path / "cache"))
    target = tiny_target()
    config = tiny_head_config(target, layers=(0, 2))
    args = HeadTrainingArguments(output_dir=str(tmp_path / "second"), max_steps=1, progress=False,
                                 cache_features=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="taps layers"):
        HeadTrainer(target, tiny_tokenizer(), config, TRAIN, EVAL, args)


def test_cli_errors(tmp_path, target_dir, repetitive_data, capsys):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    train, _ = repetitive_data
    common = ["fit", "--target", str(target_dir), "--train-data", train, "--output-dir", str(tmp_path / "o")]
    # A tokenizer without a mask token, and no --mask-token-id.
    no_mask = tmp_path / "no_mask"
    backend = Tokenizer(models.WordLevel(vocab={"<pad>": 0, "<eos>": 1, "a": 3}, unk_token="<pad>"))
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>").save_pretrained(no_mask)
    with pytest.raises(SystemExit):
        main(common + ["--tokenizer", str(no_mask)])
    assert "no mask token" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(common + ["--target-layer-ids", "9"])
    assert "outside the target" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--target", str(target_dir), "--train-data", str(tmp_path / "missing.jsonl"),
              "--output-dir", str(tmp_path / "o")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(common + ["--block-size", "80"])
    assert "long enough" in capsys.readouterr().err


def test_cli_fit(tmp_path, target_dir, repetitive_data):
    train, eval_data = repetitive_data
    output = tmp_path / "dflash"
    assert main(["fit", "--target", str(target_dir), "--train-data", train, "--eval-data", eval_data,
                 "--num-layers", "1", "--intermediate-size", "64", "--block-size", "5", "--bidirectional",
                 "--max-steps", "3", "--batch-size", "2", "--output-dir", str(output), "--no-progress"]) == 0
    head = JetSpecDraftModel.from_pretrained(output)
    assert not head.config.causal_head and head.config.block_size == 5
    assert head.config.mask_token_id == tiny_tokenizer().mask_token_id


def test_a_draft_vocabulary_holds_the_most_frequent_labels_and_trains(tmp_path):
    from jetspec_hf.training.heads import head_config_from_target

    target = tiny_target()
    config = head_config_from_target(target.config, mask_token_id=2, num_hidden_layers=1, intermediate_size=128,
                                     head_dim=16, block_size=6, target_layer_ids=[1, 3], draft_vocab_size=8)
    args = HeadTrainingArguments(output_dir=str(tmp_path / "head"), max_steps=30, per_device_batch_size=4,
                                 learning_rate=3e-3, anchors_per_seq=6, log_steps=5, progress=False)
    trainer = HeadTrainer(target, tiny_tokenizer(), config, TRAIN, EVAL, args)
    summary = trainer.train()
    head = JetSpecDraftModel.from_pretrained(tmp_path / "head")
    # The corpus cycles through 13 tokens; the 8 most frequent of them form the draft vocabulary, saved with it.
    assert head.config.draft_vocab_size == 8 and set(head.draft_vocab_ids.tolist()) <= set(range(10, 16)) | set(
        range(40, 47))
    # Labels outside the 8 can never be drafted: they count as misses, so depth-1 agreement is at most 8/13-ish,
    # but the head learns the ones it can rank.
    assert 0.2 < summary["final_eval"]["eval_top1_per_depth"][0] < 0.9


def test_a_head_started_from_the_target_s_last_layer(tmp_path):
    from jetspec_hf.training.heads import head_config_from_target, initialise_from_target

    target = tiny_target()
    config = head_config_from_target(target.config, mask_token_id=2, num_hidden_layers=1, block_size=6,
                                     target_layer_ids=[1, 2])
    head = JetSpecDraftModel(config)
    initialise_from_target(head, target)
    source = target.model.layers[-1]
    assert torch.equal(head.layers[0].mlp.down_proj.weight, source.mlp.down_proj.weight)
    assert torch.equal(head.layers[0].self_attn.q_proj.weight, source.self_attn.q_proj.weight)
    assert torch.equal(head.hidden_norm.weight, source.input_layernorm.weight)
    # fc passes the last tapped layer (the one the copied layer reads in the target) straight through.
    features = torch.randn(1, 3, 2 * config.hidden_size)
    assert torch.allclose(head.fc(features), features[..., config.hidden_size:])
    with pytest.raises(ValueError, match="target's widths"):
        narrow = head_config_from_target(target.config, mask_token_id=2, num_hidden_layers=1, intermediate_size=32,
                                         block_size=6, target_layer_ids=[1, 2])
        initialise_from_target(JetSpecDraftModel(narrow), target)


def test_a_cache_with_more_layers_serves_a_head_that_taps_fewer(tmp_path):
    # The head taps layers 1 and 3 (tiny_head_config); one cache taps all four, the other exactly the head's.
    _, wide = run(tmp_path, "wide", max_steps=6, cache_features=str(tmp_path / "wide-cache"),
                  cache_layer_ids=[0, 1, 2, 3], teacher_top_k=4, kl_weight=0.5)
    _, exact = run(tmp_path, "exact", max_steps=6, cache_features=str(tmp_path / "exact-cache"), teacher_top_k=4,
                   kl_weight=0.5)
    manifest = json.loads((tmp_path / "wide-cache" / "train" / "manifest.json").read_text())
    assert manifest["target_layer_ids"] == [0, 1, 2, 3] and manifest["teacher_top_k"] == 4
    assert wide["final_eval"]["eval_loss"] == pytest.approx(exact["final_eval"]["eval_loss"], rel=1e-5)
    a, b = final_weights(tmp_path / "wide"), final_weights(tmp_path / "exact")
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_combined_caches_train_like_one_cache_over_all_the_data(tmp_path):
    from jetspec_hf.training.data import fingerprint_sequences
    from jetspec_hf.training.features import combine_feature_caches

    first, second = TRAIN[:20], TRAIN[20:]
    settings = dict(max_steps=1, teacher_top_k=4, cache_shard_size=7)
    run(tmp_path, "a", train=first, cache_features=str(tmp_path / "cache-a"), **settings)
    run(tmp_path, "b", train=second, cache_features=str(tmp_path / "cache-b"), **settings)
    combine_feature_caches([tmp_path / "cache-a" / "train", tmp_path / "cache-b" / "train"],
                           tmp_path / "cache-ab" / "train", fingerprint_sequences(TRAIN))
    # The eval split's cache is the same in all runs.
    import shutil

    shutil.copytree(tmp_path / "cache-a" / "eval", tmp_path / "cache-ab" / "eval")
    _, combined = run(tmp_path, "combined", max_steps=6, cache_features=str(tmp_path / "cache-ab"),
                      teacher_top_k=4)
    _, whole = run(tmp_path, "whole", max_steps=6, cache_features=str(tmp_path / "cache-whole"), teacher_top_k=4)
    assert combined["final_eval"]["eval_loss"] == pytest.approx(whole["final_eval"]["eval_loss"], rel=1e-5)
