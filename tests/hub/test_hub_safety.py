"""Preparing and pushing a head folder is safe by default: nothing is replaced unasked, only a model repository's
files are uploaded, a head must fit its base model, bench results must be this head's, and cards name no local
paths."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from transformers import Qwen3Config

from jetspec_hf.hub import check_hub_folder, main, prepare_hub_folder, push_head_to_hub
from jetspec_hf.weights_fingerprint import folder_fingerprint, state_dict_fingerprint
from tiny_models import tiny_head

REPO = "me/tiny-jetspec"


@pytest.fixture
def training_output(tmp_path, head):
    """What `jetspec-hf train fit` leaves in its output folder, checkpoints and their optimizer states included."""
    folder = tmp_path / "run"
    head.save_pretrained(folder)
    (folder / "training_args.json").write_text(json.dumps({"args": {"max_steps": 20}}))
    (folder / "log.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    checkpoint = folder / "checkpoint-10"
    head.save_pretrained(checkpoint)
    (checkpoint / "state").mkdir()
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"):
        (checkpoint / "state" / name).write_bytes(b"\0" * 16)
    return folder


def _capture_upload(monkeypatch) -> dict:
    """Replace the network calls of a push; returns the arguments the upload receives."""
    sent = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kwargs: sent.update(kwargs) or "commit")
    return sent


def _selected(folder, upload: dict) -> set[str]:
    """The files of `folder` that an upload with these arguments sends (the Hub client's own filtering)."""
    files = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
    return set(filter_repo_objects(files, allow_patterns=upload["allow_patterns"],
                                   ignore_patterns=upload.get("ignore_patterns")))


def test_card_refuses_to_overwrite_without_the_flag(tmp_path, training_output, capsys):
    (training_output / "README.md").write_text("my own card\n")
    with pytest.raises(FileExistsError, match="README.md"):
        prepare_hub_folder(training_output, training_output, base_model="Qwen/Qwen3-8B")
    with pytest.raises(SystemExit):
        main(["--folder", str(training_output), "--base-model", "Qwen/Qwen3-8B", "--in-place"])
    assert "--overwrite" in capsys.readouterr().err
    assert (training_output / "README.md").read_text() == "my own card\n"
    assert not (training_output / "custom_generate").exists()

    # Neither --output nor --in-place: the source folder is not written by default.
    with pytest.raises(SystemExit):
        main(["--folder", str(training_output), "--base-model", "Qwen/Qwen3-8B"])
    assert "--output" in capsys.readouterr().err

    # A copy into a folder that already holds files is refused the same way; --overwrite replaces them.
    out = prepare_hub_folder(training_output, tmp_path / "out", base_model="Qwen/Qwen3-8B")
    with pytest.raises(FileExistsError, match="config.json"):
        prepare_hub_folder(training_output, out, base_model="Qwen/Qwen3-8B")
    assert main(["--folder", str(training_output), "--base-model", "Qwen/Qwen3-8B", "--output", str(out),
                 "--overwrite"]) == 0
    assert main(["--folder", str(training_output), "--base-model", "Qwen/Qwen3-8B", "--in-place",
                 "--overwrite"]) == 0
    assert (training_output / "README.md").read_text() != "my own card\n"


def test_push_of_a_training_output_uploads_no_checkpoint(training_output, monkeypatch, base_model):
    prepare_hub_folder(training_output, training_output, base_model=base_model, repo_id=REPO)
    upload = _capture_upload(monkeypatch)
    push_head_to_hub(training_output, REPO)
    code = {path.relative_to(training_output).as_posix() for path in (training_output / "custom_generate").iterdir()}
    assert _selected(training_output, upload) == {"README.md", "config.json", "model.safetensors",
                                                  "training_args.json", *code}


def test_a_copy_holds_only_repository_files(tmp_path, training_output, base_model):
    out = prepare_hub_folder(training_output, tmp_path / "out", base_model=base_model)
    assert not (out / "checkpoint-10").exists() and not (out / "log.jsonl").exists()


def test_a_head_that_does_not_fit_its_base_model_is_refused(tmp_path, head, training_output, base_model):
    wider = Qwen3Config(hidden_size=128, vocab_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=32, intermediate_size=256)
    with pytest.raises(ValueError, match="does not fit its base model .*hidden size 64 where the target has 128"):
        prepare_hub_folder(head, tmp_path / "out", base_model="Qwen/Qwen3-8B", base_model_config=wider)
    assert not (tmp_path / "out").exists()

    prepare_hub_folder(training_output, training_output, base_model=base_model, repo_id=REPO)
    assert check_hub_folder(training_output, REPO) == []
    problems = check_hub_folder(training_output, REPO, base_model_config=wider)
    assert any("trained for a 4-layer target; this target has 2" in problem for problem in problems)
    # A base model whose config cannot be read cannot be vouched for either.
    prepare_hub_folder(training_output, training_output, base_model="unknown-org/unknown-model", repo_id=REPO,
                       overwrite=True)
    assert any("cannot read the config of the base model" in problem for problem in check_hub_folder(training_output))


def test_bench_results_of_another_head_are_refused(tmp_path, head, target, training_output, base_model):
    other = tiny_head(target, seed=9, target_layer_ids=[1, 2])
    bench = {"methods": [], "head_fingerprint": state_dict_fingerprint(other.state_dict())}
    with pytest.raises(ValueError, match="measured another head"):
        prepare_hub_folder(training_output, tmp_path / "out", base_model=base_model, bench_json=bench)
    assert not (tmp_path / "out").exists()

    # The DFlash head of the same report is this head: accepted.
    bench["dflash_head_fingerprint"] = folder_fingerprint(training_output)
    out = prepare_hub_folder(training_output, tmp_path / "out", base_model=base_model, bench_json=bench, repo_id=REPO)
    assert check_hub_folder(out, REPO) == []
    (out / "bench_results.json").write_text(json.dumps({"head_fingerprint": bench["head_fingerprint"]}))
    assert any("measured another head" in problem for problem in check_hub_folder(out, REPO))


def test_cards_carry_no_local_paths(tmp_path, head):
    bench = {"target": str(tmp_path / "models" / "target"), "head": str(tmp_path / "runs" / "head"),
             "prompts": {"source": str(tmp_path / "data" / "prompts.jsonl"), "samples": 2},
             "environment": {"device": "cpu"}, "methods": []}
    out = prepare_hub_folder(head, tmp_path / "out", base_model="Qwen/Qwen3-8B", bench_json=bench)
    card = (out / "README.md").read_text()
    assert str(tmp_path) not in card
    assert "**target**: target" in card and "from prompts.jsonl" in card
    with pytest.raises(ValueError, match="is a local path"):
        prepare_hub_folder(head, tmp_path / "elsewhere", base_model=str(tmp_path / "models" / "target"))
