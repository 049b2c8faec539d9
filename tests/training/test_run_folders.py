"""A training run never mixes with an earlier one: a fresh run refuses its folders unless told to clear them, a
resumed run drops the log lines it writes again, and a checkpoint holds the weights once."""

import json

import pytest
from tiny_models import tiny_target, tiny_tokenizer
from training_helpers import repetitive_records, tiny_head_config

from jetspec_hf.training.__main__ import main
from jetspec_hf.training.arguments import HeadTrainingArguments
from jetspec_hf.training.checkpoints import find_latest_checkpoint
from jetspec_hf.training.trainer import HeadTrainer

TRAIN, EVAL = repetitive_records(24, seed=0), repetitive_records(4, seed=1)


def trainer(output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), max_steps=6, per_device_batch_size=4, learning_rate=3e-3,
                    anchors_per_seq=4, log_steps=2, save_steps=3, save_total_limit=5, seed=0, progress=False)
    target = tiny_target()
    return HeadTrainer(target, tiny_tokenizer(), tiny_head_config(target), TRAIN, EVAL,
                       HeadTrainingArguments(**{**settings, **overrides}))


def log_steps(folder):
    return [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]


def test_a_fresh_run_refuses_an_earlier_runs_folder_and_can_clear_it(tmp_path):
    trainer(tmp_path / "run").train()
    assert log_steps(tmp_path / "run") == [2, 4, 6, 6]  # losses at 2, 4, 6; the final evaluation
    with pytest.raises(ValueError, match="holds an earlier training run.*--overwrite-output-dir"):
        trainer(tmp_path / "run").train()
    # Checkpoints kept elsewhere count too: `--resume latest` would pick them.
    with pytest.raises(ValueError, match="checkpoint-6"):
        trainer(tmp_path / "other", checkpoint_dir=str(tmp_path / "run")).train()

    trainer(tmp_path / "run", max_steps=3, save_steps=0, overwrite_output_dir=True).train()
    assert log_steps(tmp_path / "run") == [2, 3, 3]
    assert find_latest_checkpoint(tmp_path / "run") is None


def test_resume_rewrites_the_log_after_its_step(tmp_path):
    trainer(tmp_path / "run").train()
    learning_rates = [record.get("lr") for record in map(json.loads, (tmp_path / "run" / "log.jsonl").open())]
    trainer(tmp_path / "run", resume=str(tmp_path / "run" / "checkpoint-3")).train()
    # Steps 4 and 6 once each, not twice; the schedule continues where it stopped.
    assert log_steps(tmp_path / "run") == [2, 4, 6, 6]
    assert [record.get("lr") for record in map(json.loads, (tmp_path / "run" / "log.jsonl").open())] == learning_rates


def test_a_checkpoint_holds_the_weights_once(tmp_path):
    trainer(tmp_path / "run", max_steps=3).train()
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert (checkpoint / "model.safetensors").is_file()
    assert not any(path.suffix in {".safetensors", ".bin"} and "model" in path.name
                   for path in (checkpoint / "state").iterdir())


def test_cli_refuses_before_loading_the_target(tmp_path, target_dir, repetitive_data, capsys, monkeypatch):
    train, _ = repetitive_data
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "log.jsonl").write_text('{"step": 1}\n')

    def must_not_load(*args, **kwargs):
        raise AssertionError("the target was loaded before the folders were checked")

    monkeypatch.setattr("jetspec_hf.training.__main__.load_target_and_tokenizer", must_not_load)
    with pytest.raises(SystemExit):
        main(["fit", "--target", str(target_dir), "--train-data", train, "--output-dir", str(tmp_path / "out")])
    assert "--overwrite-output-dir" in capsys.readouterr().err
