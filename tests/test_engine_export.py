"""Heads keep their meaning in serving engines: an exported head declares its block mask every way an engine reads
it, and heads that declare it in any of those ways load with it here."""

import json

import pytest

from jetspec_hf import JetSpecDraftModel
from tiny_models import tiny_head, tiny_target


def vllm_layer_is_causal(config: dict, layer_type: str = "full_attention") -> bool:
    """vLLM's rule for a DFlash-format draft layer (`qwen3_dflash.py`, `_dflash_layer_causal`): a top-level
    `is_causal`, else `dflash_config.causal`, else only sliding-window layers are causal."""
    if config.get("is_causal") is not None:
        return bool(config["is_causal"])
    dflash = config.get("dflash_config") or {}
    if dflash.get("causal") is not None:
        return bool(dflash["causal"])
    return layer_type == "sliding_attention"


def reference_is_causal(config: dict) -> bool:
    """The published JetSpec reference reads `dflash_config.causal_head`."""
    return bool(config["dflash_config"]["causal_head"])


@pytest.mark.parametrize("causal", [True, False])
def test_an_exported_head_reads_as_trained_under_every_engine_rule(tmp_path, causal):
    head = tiny_head(tiny_target(), causal=causal, target_layer_ids=[1, 2])
    head.save_pretrained(tmp_path / "export", checkpoint_format="released")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert vllm_layer_is_causal(config) is causal
    assert reference_is_causal(config) is causal
    assert JetSpecDraftModel.from_pretrained(tmp_path / "export").config.causal_head is causal


@pytest.mark.parametrize("key", ["dflash_config.causal_head", "dflash_config.causal", "is_causal"])
@pytest.mark.parametrize("causal", [True, False])
def test_a_head_declaring_its_mask_by_any_key_loads_with_it(tmp_path, key, causal):
    head = tiny_head(tiny_target(), causal=True, target_layer_ids=[1, 2])
    head.save_pretrained(tmp_path / "head", checkpoint_format="released")
    path = tmp_path / "head" / "config.json"
    config = json.loads(path.read_text())
    config.pop("is_causal")
    for name in ("causal", "causal_head"):
        config["dflash_config"].pop(name)
    if key == "is_causal":
        config["is_causal"] = causal
    else:
        config["dflash_config"][key.split(".")[1]] = causal
    path.write_text(json.dumps(config))
    loaded = JetSpecDraftModel.from_pretrained(tmp_path / "head")
    assert loaded.config.causal_head is causal


def test_contradicting_causality_keys_are_an_error_naming_them(tmp_path):
    head = tiny_head(tiny_target(), causal=True, target_layer_ids=[1, 2])
    head.save_pretrained(tmp_path / "head", checkpoint_format="released")
    path = tmp_path / "head" / "config.json"
    config = json.loads(path.read_text())
    config["is_causal"] = False
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="dflash_config.causal_head=True.*is_causal=False"):
        JetSpecDraftModel.from_pretrained(tmp_path / "head")


@pytest.mark.parametrize("engine, causal, warned", [("sglang", True, True), ("sglang", False, False),
                                                    ("vllm", True, False), ("jetspec", True, False)])
def test_export_says_when_the_engine_runs_the_head_differently(tmp_path, capsys, engine, causal, warned):
    from jetspec_hf.cli import main as cli_main

    tiny_head(tiny_target(), causal=causal, target_layer_ids=[1, 2]).save_pretrained(tmp_path / "head")
    assert cli_main(["export", "--head", str(tmp_path / "head"), "--output", str(tmp_path / "out"),
                     "--engine", engine]) == 0
    captured = capsys.readouterr()
    assert ("WARNING" in captured.err and "BIDIRECTIONALLY" in captured.err) is warned
    assert engine in captured.out + captured.err
