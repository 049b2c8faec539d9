"""Model cards: metadata that parses back with huggingface_hub, the head's facts, training rows, results rows."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import ModelCard

from jetspec_hf.hub import render_causal_lm_card, render_head_card, summarize_bench, summarize_training
from jetspec_hf.hub.card_facts import count_safetensors_parameters, format_count

BENCH = {
    "environment": {"device": "cuda:0", "dtype": "bfloat16", "torch": "2.13.0", "transformers": "5.24.0",
                    "gpu": "NVIDIA H200"},
    "target": "Qwen/Qwen3-8B",
    "head": "me/qwen3-8b-jetspec",
    "prompts": {"source": "heldout", "samples": 40, "max_new_tokens": 128},
    "methods": [
        {"name": "plain", "kind": "plain", "tree_budget": None, "tau": None, "tokens_per_second": 41.0,
         "speedup": 1.0, "matches_plain": True},
        {"name": "JetSpec tree", "kind": "jetspec-tree", "tree_budget": 64, "tau": 4.25, "tokens_per_second": 120.5,
         "speedup": 2.94, "matches_plain": True},
        {"name": "JetSpec tree", "kind": "jetspec-tree", "tree_budget": 256, "tau": 5.5, "tokens_per_second": 131.0,
         "speedup": 3.2, "matches_plain": False},
        {"name": "HF assisted", "kind": "hf-assisted", "skipped_reason": "no draft LM given\ndetails"},
    ],
}

TRAINING = {
    "args": {"output_dir": "runs/head", "max_steps": 500, "per_device_batch_size": 4, "gradient_accumulation_steps": 2,
             "learning_rate": 0.0003, "warmup_ratio": 0.05, "warmup_steps": None, "anchors_per_seq": 16,
             "kl_weight": 1.0, "kl_temperature": 1.0, "depth_gamma": None, "mixed_precision": "bf16", "seed": 3},
    "num_processes": 2,
    "num_train_sequences": 1000,
    "num_eval_sequences": 20,
}


def _saved(card, tmp_path) -> ModelCard:
    path = tmp_path / "README.md"
    card.save(path)
    return ModelCard.load(path)


def _results_rows(text: str) -> list[list[str]]:
    section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    # Cells split on unescaped pipes; the header row is dropped.
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])] for line in rows[1:]]


def test_head_card_metadata_parses_back(tmp_path, head):
    card = render_head_card(head.config, base_model="Qwen/Qwen3-8B", num_parameters=head.num_parameters(),
                            bench=BENCH, training_args=TRAINING, repo_id="me/qwen3-8b-jetspec", license="mit")
    data = _saved(card, tmp_path).data
    assert data.library_name == "transformers"
    assert data.base_model == "Qwen/Qwen3-8B"
    assert data.pipeline_tag == "text-generation"
    assert data.license == "mit"
    assert {"speculative-decoding", "jetspec", "custom_generate"} <= set(data.tags)
    assert "dflash" not in data.tags


def test_dflash_head_is_tagged_and_described(tmp_path, dflash_head):
    card = _saved(render_head_card(dflash_head.config, base_model="Qwen/Qwen3-8B", custom_generate=False), tmp_path)
    assert {"speculative-decoding", "jetspec", "dflash"} <= set(card.data.tags)
    assert "custom_generate" not in card.data.tags
    assert "bidirectional" in card.text and "custom_generate=" not in card.text


def test_head_card_states_the_head_and_how_to_run_it(tmp_path, head):
    text = render_head_card(head.config, base_model="Qwen/Qwen3-8B", num_parameters=head.num_parameters(),
                            repo_id="me/qwen3-8b-jetspec").text
    assert "JetSpec (causal block mask)" in text
    assert f"| Block size | {head.config.block_size} " in text
    assert "| Tapped target layers | 1, 2 (of 4;" in text
    assert format_count(head.num_parameters()) in text
    # The exact snippets, with the repo id filled in.
    assert 'head = JetSpecDraftModel.from_pretrained("me/qwen3-8b-jetspec", dtype=target.dtype)' in text
    assert "jetspec_hf.enable(target)" in text
    assert "out = target.generate(**inputs, assistant_model=head, max_new_tokens=256)" in text
    assert 'custom_generate="me/qwen3-8b-jetspec",' in text and "trust_remote_code=True," in text


def test_results_table_rows_from_bench_json(head):
    text = render_head_card(head.config, base_model="Qwen/Qwen3-8B", bench=BENCH).text
    rows = _results_rows(text)
    assert rows[0] == ["plain", "plain", "–", "–", "41.0", "1.00×", "yes"]
    assert rows[1] == ["JetSpec tree", "jetspec-tree", "64", "4.25", "120.5", "2.94×", "yes"]
    assert rows[2] == ["JetSpec tree", "jetspec-tree", "256", "5.50", "131.0", "3.20×", "**no**"]
    assert rows[3][0] == "HF assisted" and rows[3][-1] == "skipped: no draft LM given"
    assert "**hardware**: NVIDIA H200 (cuda:0)" in text and "**dtype**: bfloat16" in text
    assert "**transformers**: 5.24.0" in text and "40 prompts, from heldout, 128 new tokens each" in text


def test_bench_json_with_missing_fields_degrades_to_dashes(tmp_path, head):
    bench_path = tmp_path / "bench.json"
    bench_path.write_text(json.dumps({"methods": [{"name": "tree", "tree_budget": 32, "speedup": 2.0}]}))
    text = render_head_card(head.config, base_model="Qwen/Qwen3-8B", bench=bench_path).text
    assert _results_rows(text) == [["tree", "–", "32", "–", "–", "2.00×", "–"]]
    assert "**hardware**" not in text
    assert summarize_bench(None) is None and summarize_bench({}) is None


def test_missing_bench_and_training_leave_notes(head):
    text = render_head_card(head.config, base_model="Qwen/Qwen3-8B").text
    assert "No benchmark results were attached" in text
    assert "No training record" in text
    assert 'from_pretrained("path/to/this/head"' in text


def test_training_rows(head):
    rows = {row["setting"]: row["value"] for row in summarize_training(TRAINING)["rows"]}
    assert rows["sequences per step"].startswith("16 (4 per device × 2 accumulation × 2 processes)")
    assert rows["peak learning rate"] == "0.0003"
    assert rows["depth decay γ"] == "none (uniform over depths)"
    assert rows["training sequences"] == "1000" and rows["mixed precision"] == "bf16"
    assert "warm-up steps" not in rows and rows["warm-up fraction"] == "0.05"
    # A flat mapping of settings (no "args" level) is read the same way.
    assert {row["setting"] for row in summarize_training(TRAINING["args"])["rows"]} >= {"optimizer steps"}
    text = render_head_card(head.config, base_model="Qwen/Qwen3-8B", training_args=TRAINING,
                            training_data="Self-distilled answers of the target to 1000 prompts.").text
    assert "| optimizer steps | 500 |" in text and "Self-distilled answers" in text


def test_causal_lm_card(tmp_path, target):
    target.save_pretrained(tmp_path / "target")
    card = render_causal_lm_card(target.config, num_parameters=count_safetensors_parameters(tmp_path / "target"),
                                 role="bundled target", repo_id="me/tiny-target", extra_tags=["jetspec-bundled"])
    loaded = _saved(card, tmp_path)
    assert loaded.data.library_name == "transformers" and loaded.data.pipeline_tag == "text-generation"
    assert set(loaded.data.tags) == {"qwen3", "jetspec-bundled"}
    assert "**Role:** bundled target" in loaded.text
    assert f"| Parameters | {format_count(target.num_parameters())} |" in loaded.text
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny-target")' in loaded.text


@pytest.mark.parametrize("count, text", [(None, "–"), (999, "999"), (82_368, "82.4K"), (1_050_000_000, "1.05B")])
def test_format_count(count, text):
    assert format_count(count) == text
