"""A missing optional dependency stops a command before any work, with the `pip install "jetspec_hf[...]"` line."""

import json
import sys

import pytest

import jetspec_hf.bench.loading
from jetspec_hf.cli import main as cli_main
from jetspec_hf.extras import MissingExtraError, require_extra
from tiny_models import tiny_head, tiny_target


def _uninstall(monkeypatch, module):
    """Make `module` look absent: a `None` entry in sys.modules is what Python reports for a failed import."""
    monkeypatch.setitem(sys.modules, module, None)


def test_the_error_names_the_extra_and_the_package(monkeypatch):
    _uninstall(monkeypatch, "jinja2")
    expected = r'Rendering needs jinja2, which is not installed: pip install "jetspec_hf\[hub\]"'
    with pytest.raises(MissingExtraError, match=expected):
        require_extra("hub", purpose="Rendering")
    require_extra("bench", "json", purpose="Anything")  # installed: no error


def test_card_without_jinja2_writes_nothing(tmp_path, monkeypatch, capsys):
    tiny_head(tiny_target()).save_pretrained(tmp_path / "head")
    _uninstall(monkeypatch, "jinja2")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["card", "--folder", str(tmp_path / "head"), "--base-model", "Qwen/Qwen3-8B",
                  "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert 'pip install "jetspec_hf[hub]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bench_without_matplotlib_stops_before_loading_models(tmp_path, monkeypatch, capsys):
    def must_not_load(*args, **kwargs):
        raise AssertionError("models were loaded before the dependency check")

    monkeypatch.setattr(jetspec_hf.bench.loading, "load_models", must_not_load)
    monkeypatch.setattr("jetspec_hf.bench.run.load_models", must_not_load)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "abc"}) + "\n")
    argv = ["bench", "--target", "t", "--head", "h", "--dataset", str(prompts), "--output-dir", str(tmp_path / "o")]
    _uninstall(monkeypatch, "matplotlib")
    assert cli_main(argv) == 1
    assert 'The benchmark plot (benchmark.png) needs matplotlib' in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr("jetspec_hf.bench.run.load_models", must_not_load)
    _uninstall(monkeypatch, "datasets")
    assert cli_main([*argv[:5], "--dataset", "gsm8k", *argv[7:]]) == 1
    assert 'Reading prompts from \'gsm8k\' (not a .jsonl file) needs datasets' in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_training_without_datasets_stops_before_loading_the_target(tmp_path, monkeypatch, capsys):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the target was loaded before the dependency check")

    monkeypatch.setattr("jetspec_hf.training.__main__.load_target_and_tokenizer", must_not_load)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "abc"}) + "\n")
    _uninstall(monkeypatch, "datasets")
    with pytest.raises(SystemExit):
        cli_main(["train", "generate-data", "--target", "t", "--dataset", str(prompts), "--output",
                  str(tmp_path / "as_a_dataset_folder")])
    assert 'needs datasets, which is not installed: pip install "jetspec_hf[train]"' in capsys.readouterr().err
    assert not (tmp_path / "as_a_dataset_folder").exists()
    # A JSONL in, a JSONL out: nothing optional is needed, and the command goes on to load the target.
    with pytest.raises(AssertionError, match="the target was loaded"):
        cli_main(["train", "generate-data", "--target", "t", "--dataset", str(prompts), "--output",
                  str(tmp_path / "out.jsonl")])
