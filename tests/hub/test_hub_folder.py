"""Hub-ready folders: what `prepare_hub_folder` writes, the `custom_generate/` sources, the push call, the CLI."""

from __future__ import annotations

import ast
import importlib.util
import json

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file
from transformers import AutoModel

import jetspec_hf.cli
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.hub import check_hub_folder, main, prepare_hub_folder, push_head_to_hub, repository_files
from jetspec_hf.hub.remote_code import collect_modules, read_head_location
from jetspec_hf.hub.remote_generate import generate as remote_generate
from test_modeling_jetspec import write_released_checkpoint
from tiny_models import random_prompt

REPO = "me/tiny-jetspec"
BENCH = {"environment": {"device": "cpu", "dtype": "float32"},
         "methods": [{"name": "tree", "kind": "jetspec-tree", "tree_budget": 16, "tau": 1.5, "tokens_per_second": 9.0,
                      "speedup": 1.2, "matches_plain": True}]}


@pytest.fixture
def trained_folder(tmp_path, head):
    """A training output folder: the head, its training record, a tokenizer file."""
    folder = tmp_path / "trained"
    head.save_pretrained(folder)
    (folder / "training_args.json").write_text(json.dumps({"args": {"max_steps": 12, "seed": 5}}))
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def _captured_upload(monkeypatch):
    """Replace the two network calls of a push by recorders."""
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def upload_folder(self, **kwargs):
        calls["upload"] = kwargs
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_prepared_folder_contents(tmp_path, head, trained_folder, base_model):
    out = prepare_hub_folder(trained_folder, tmp_path / "out", base_model=base_model, bench_json=BENCH,
                             repo_id=REPO)
    names = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert {"config.json", "model.safetensors", "README.md", "bench_results.json", "training_args.json",
            "tokenizer_config.json", "custom_generate/generate.py", "custom_generate/requirements.txt"} <= names

    reloaded = AutoModel.from_pretrained(out)
    assert isinstance(reloaded, JetSpecDraftModel)
    state = head.state_dict()
    assert all(torch.equal(tensor, state[name]) for name, tensor in reloaded.state_dict().items())

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == base_model and "jetspec" in card.data.tags
    assert "| optimizer steps | 12 |" in card.text  # from the folder's training_args.json
    assert "| tree | jetspec-tree | 16 | 1.50 |" in card.text
    assert json.loads((out / "bench_results.json").read_text()) == BENCH
    assert read_head_location(out) == REPO
    assert check_hub_folder(out, REPO) == []


def test_custom_generate_is_the_package_source_flattened(tmp_path, head):
    out = prepare_hub_folder(head, tmp_path / "out", base_model="Qwen/Qwen3-8B")
    folder = out / "custom_generate"
    modules = collect_modules()
    assert {path.stem for path in folder.glob("*.py")} == set(modules.values())
    for module_name, flat in modules.items():
        copied = (folder / f"{flat}.py").read_text()
        tree = ast.parse(copied)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                # Only one-dot imports of siblings that exist (what transformers' loader follows), and nothing from
                # the package itself.
                assert node.level in (0, 1), f"{flat}.py line {node.lineno}"
                assert not (node.module or "").startswith("jetspec_hf")
                if node.level == 1:
                    assert (folder / f"{node.module}.py").is_file()
            elif isinstance(node, ast.Import):
                assert all(not alias.name.startswith("jetspec_hf") for alias in node.names)
        # Apart from rewritten imports (and the filled-in head location), the copy is the package's own source.
        original = importlib.util.find_spec(module_name).origin
        source_lines = [line for line in open(original).read().splitlines() if "import" not in line]
        copied_lines = [line for line in copied.splitlines() if "import" not in line]
        if flat == "generate":
            source_lines = [line for line in source_lines if not line.startswith("HEAD_LOCATION")]
            copied_lines = [line for line in copied_lines if not line.startswith("HEAD_LOCATION")]
        assert copied_lines == source_lines, flat
    # Without a repo id, the head is loaded from the prepared folder itself.
    assert read_head_location(out) == str(out.resolve())
    assert "transformers>=" in (folder / "requirements.txt").read_text()


def test_released_head_is_republished_in_our_format(tmp_path):
    weights = write_released_checkpoint(tmp_path / "released")
    out = prepare_hub_folder(tmp_path / "released", tmp_path / "out", base_model="Qwen/Qwen3-8B", repo_id=REPO)
    assert json.loads((out / "config.json").read_text())["model_type"] == "jetspec"
    assert set(load_file(str(out / "model.safetensors"))) == set(weights)
    assert isinstance(AutoModel.from_pretrained(out), JetSpecDraftModel)


def test_in_place_leaves_weights_untouched(trained_folder):
    weights_before = (trained_folder / "model.safetensors").read_bytes()
    config_before = (trained_folder / "config.json").read_text()
    prepare_hub_folder(trained_folder, trained_folder, base_model="Qwen/Qwen3-8B", repo_id=REPO)
    assert (trained_folder / "model.safetensors").read_bytes() == weights_before
    assert (trained_folder / "config.json").read_text() == config_before
    assert (trained_folder / "README.md").is_file() and read_head_location(trained_folder) == REPO


def test_push_uploads_the_folder(tmp_path, head, monkeypatch, base_model):
    out = prepare_hub_folder(head, tmp_path / "out", base_model=base_model, repo_id=REPO)
    calls = _captured_upload(monkeypatch)
    assert push_head_to_hub(out, REPO, private=True, commit_message="first head") == "commit"
    assert calls["create"] == (REPO, {"token": None, "private": True, "repo_type": "model", "exist_ok": True})
    upload = calls["upload"]
    assert upload["repo_id"] == REPO and upload["folder_path"] == str(out) and upload["repo_type"] == "model"
    assert upload["commit_message"] == "first head" and upload["revision"] is None and upload["create_pr"] is False
    assert upload["allow_patterns"] == repository_files(out)


def test_push_refuses_a_folder_meant_for_elsewhere(tmp_path, head, monkeypatch):
    calls = _captured_upload(monkeypatch)
    local = prepare_hub_folder(head, tmp_path / "local", base_model="Qwen/Qwen3-8B")  # no repo id
    with pytest.raises(ValueError, match="prepare the folder again with repo_id='me/tiny-jetspec'"):
        push_head_to_hub(local, REPO)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json; no \\*.safetensors weights; no README.md"):
        push_head_to_hub(tmp_path / "empty", REPO)
    assert calls == {}


def test_remote_generate_in_package_matches_plain(target, head):
    prompt = random_prompt(seed=3, length=9)
    plain = target.generate(prompt, max_new_tokens=12, do_sample=False)
    out = remote_generate(target, prompt, draft_head=head, max_new_tokens=12, do_sample=False,
                          revision="main", cache_dir="/nonexistent", return_dict_in_generate=True)
    assert torch.equal(out.sequences, plain) and out.accepted_lengths
    with pytest.raises(ValueError, match="do not pass `assistant_model`"):
        remote_generate(target, prompt, assistant_model=head, max_new_tokens=2)
    with pytest.raises(ValueError, match="No draft head"):
        remote_generate(target, prompt, max_new_tokens=2)
    with pytest.raises(TypeError, match="repo id, a folder or a JetSpecDraftModel"):
        remote_generate(target, prompt, draft_head=object(), max_new_tokens=2)


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "jetspec-hf card" in usage and "--bench-json" in usage and "--push-to" in usage


def test_cli_dispatch_and_head_card(tmp_path, trained_folder, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH))
    status = jetspec_hf.cli.main(["card", "--folder", str(trained_folder), "--bench-json", str(bench),
                                  "--base-model", "Qwen/Qwen3-8B", "--output", str(tmp_path / "out"),
                                  "--repo-id", REPO])
    assert status == 0 and f"wrote {tmp_path / 'out' / 'README.md'}" in capsys.readouterr().out
    assert ModelCard.load(tmp_path / "out" / "README.md").data.base_model == "Qwen/Qwen3-8B"
    assert read_head_location(tmp_path / "out") == REPO


def test_cli_needs_base_model_for_a_head(trained_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--folder", str(trained_folder), "--in-place"])
    assert exit_info.value.code == 2 and "--base-model is required" in capsys.readouterr().err


def test_cli_push(tmp_path, trained_folder, monkeypatch, base_model):
    calls = _captured_upload(monkeypatch)
    assert main(["--folder", str(trained_folder), "--base-model", base_model, "--output", str(tmp_path / "out"),
                 "--push-to", REPO, "--private"]) == 0
    assert calls["create"][0] == REPO and calls["create"][1]["private"] is True
    assert calls["upload"]["folder_path"] == str(tmp_path / "out")
    assert read_head_location(tmp_path / "out") == REPO  # --push-to implies the repo id


def test_cli_card_for_a_plain_model(tmp_path, target):
    target.save_pretrained(tmp_path / "target")
    # The record the bundled-LM training script leaves beside the weights.
    summary = {"name": "target", "steps": 300, "batch_size": 16, "seq_len": 256, "lr": 0.001, "seed": 0,
               "train_tokens": 1228800, "epochs": 2.5, "final_train_loss": 2.1, "heldout_loss": 2.4}
    (tmp_path / "target" / "training_summary.json").write_text(json.dumps(summary))
    assert main(["--folder", str(tmp_path / "target"), "--role", "bundled target", "--tag", "jetspec-bundled",
                 "--in-place"]) == 0
    card = ModelCard.load(tmp_path / "target" / "README.md")
    assert card.data.tags == ["qwen3", "jetspec-bundled"] and "**Role:** bundled target" in card.text
    for row in ("| optimizer steps | 300 |", "| sequences per step | 16 |", "| peak learning rate | 0.001 |",
                "| max sequence length | 256 |", "| held-out loss | 2.4 |", "| epochs | 2.5 |"):
        assert row in card.text
    assert not (tmp_path / "target" / "custom_generate").exists()
