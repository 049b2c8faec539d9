"""`jetspec-hf bench` end to end on tiny random models saved to disk, and its loud failure on a lossy method."""

import json
import subprocess
import sys

import pytest

from bench_setup import bench_argv
from jetspec_hf.bench import main
from jetspec_hf.bench.measure import first_difference
from jetspec_hf.bench.methods import Generation, Method
from jetspec_hf.bench.prompts import encode_prompts, load_prompts
from jetspec_hf.cli import main as cli_main
from tiny_models import tiny_tokenizer

def test_bench_runs_every_method_and_writes_json_and_png(bench_files, tmp_path, capsys):
    assert main(bench_argv(bench_files, tmp_path)) == 0

    report = json.loads((tmp_path / "benchmark.json").read_text())
    png = (tmp_path / "benchmark.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000

    assert {"device", "dtype", "torch", "transformers", "cpu", "threads"} <= set(report["environment"])
    assert report["prompts"] == {**report["prompts"], "samples": 2, "max_new_tokens": 12}
    assert report["head"].endswith("jetspec_head") and report["dflash_head"].endswith("dflash_head")

    rows = {row["name"]: row for row in report["methods"]}
    kinds = [row["kind"] for row in report["methods"]]
    expected_kinds = ["plain", "hf-assisted", "hf-prompt-lookup", "hf-dflash", "hf-dflash", "jetspec-chain",
                      "jetspec-tree", "jetspec-tree", "jetspec-auto", "jetspec-fanout", "jetspec-fanout",
                      "jetspec-hybrid", "jetspec-hybrid", "dflash-chain", "dflash-tree", "dflash-tree"]
    assert kinds == expected_kinds
    keys = {"name", "kind", "tree_budget", "tree_width", "tau", "target_forwards_per_token", "tokens_per_second",
            "speedup", "matches_plain", "skipped_reason"}
    for row in report["methods"]:
        assert keys <= set(row)
        # Every method either ran and reproduced plain greedy output, or says why it did not run.
        if row["skipped_reason"] is None:
            assert row["matches_plain"] is True, row
            assert row["tokens_per_second"] > 0 and row["speedup"] > 0
            assert row["target_forwards_per_token"] > 0
        else:
            assert row["matches_plain"] is None and row["skipped_reason"]

    plain = rows["plain"]
    assert plain["speedup"] == 1.0 and plain["tau"] == 1.0
    # Plain decoding: one target forward per generated token (the prefill yields the first one).
    assert plain["target_forwards_per_token"] == 1.0
    assert [row["tree_budget"] for row in report["methods"] if row["kind"] == "jetspec-tree"] == [4, 8]
    chain = rows["JetSpec chain"]
    assert chain["tree_width"] == 1 and chain["tree_budget"] == 8  # block_size 8: depth 7, root included
    assert {row["tree_expansion"] for row in report["methods"] if row["kind"] == "jetspec-fanout"} == {"fanout"}
    assert all(row["lookup_tokens"] for row in report["methods"] if row["kind"] == "jetspec-hybrid")
    assert rows["JetSpec tree auto"]["tree_budget"] == "auto"
    tree_kinds = ("-tree", "-chain", "-auto", "-fanout", "-hybrid")
    for row in report["methods"]:
        if row["kind"].endswith(tree_kinds):
            assert row["tau"] >= 1.0
            # One forward per round plus the prefill: never more forwards than plain decoding.
            assert row["target_forwards_per_token"] <= 1.0 + 1e-9

    breakdown = report["round_breakdown"]
    profiled = [row["name"] for row in report["methods"] if row["kind"].endswith(tree_kinds)]
    assert list(breakdown["methods"]) == profiled
    for entry in breakdown["methods"].values():
        assert {"draft", "tree", "verify", "accept", "cache", "other", "round", "round_over_verify"} <= set(entry)
        assert entry["rounds"] > 0 and entry["round_over_verify"] >= 1.0

    table = capsys.readouterr().out
    assert "| plain |" in table and "JetSpec tree b=8" in table and "round / verify" in table


def test_missing_draft_lm_is_a_stated_skip(bench_files, tmp_path):
    argv = bench_argv(bench_files, tmp_path, "--methods", "assisted", "--profile-samples", "0", "--warmup", "0")
    draft_index = argv.index("--draft-lm")
    del argv[draft_index : draft_index + 2]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "benchmark.json").read_text())["methods"]
    assert [row["kind"] for row in rows] == ["plain", "hf-assisted"]
    assert rows[1]["skipped_reason"] == "no draft LM given (--draft-lm)"
    assert rows[1]["tau"] is None and rows[1]["speedup"] is None


def test_a_failing_stock_path_is_recorded_with_its_reason(bench_files, tmp_path, monkeypatch):
    original = Method.generate

    def broken_stock_dflash(self, input_ids, round_profiler=None):
        if self.kind == "hf-dflash":
            raise RuntimeError("stock DFlash path cannot run this head")
        return original(self, input_ids, round_profiler)

    monkeypatch.setattr(Method, "generate", broken_stock_dflash)
    argv = bench_argv(bench_files, tmp_path, "--methods", "hf-dflash", "--profile-samples", "0", "--warmup", "0")
    assert main(argv) == 0
    rows = json.loads((tmp_path / "benchmark.json").read_text())["methods"]
    assert rows[1]["kind"] == "hf-dflash"
    assert rows[1]["skipped_reason"] == "RuntimeError: stock DFlash path cannot run this head"


def test_a_method_whose_output_differs_from_plain_fails_loudly(bench_files, tmp_path, monkeypatch, capsys):
    original = Method.generate

    def corrupted_tree(self, input_ids, round_profiler=None):
        generation = original(self, input_ids, round_profiler)
        if self.kind == "jetspec-tree":
            sequences = generation.sequences.clone()
            sequences[0, -1] = (sequences[0, -1] + 1) % 96
            return Generation(sequences, generation.accepted_lengths, generation.tree_sizes)
        return generation

    monkeypatch.setattr(Method, "generate", corrupted_tree)
    argv = bench_argv(bench_files, tmp_path, "--methods", "tree", "--profile-samples", "0", "--warmup", "0")
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "MISMATCH: JetSpec tree b=4" in captured.err and "FAILED" in captured.err
    rows = json.loads((tmp_path / "benchmark.json").read_text())["methods"]
    trees = [row for row in rows if row["kind"] == "jetspec-tree"]
    assert trees and all(row["matches_plain"] is False and row["mismatches"] for row in trees)
    assert "**NO**" in captured.out
    # --allow-mismatch still reports the difference but lets the run pass (bf16 near-tie flips).
    assert main([*argv, "--allow-mismatch"]) == 0


def test_cli_dispatch_and_module_entry_point(bench_files, tmp_path):
    argv = bench_argv(bench_files, tmp_path, "--methods", "lookup", "--profile-samples", "0", "--repeats", "2")
    assert cli_main(["bench", *argv]) == 0
    rows = json.loads((tmp_path / "benchmark.json").read_text())["methods"]
    assert [row["kind"] for row in rows] == ["plain", "hf-prompt-lookup"]
    # Repeats are timed, but forwards are counted once per prompt.
    assert rows[0]["target_forwards_per_token"] == 1.0 and rows[0]["target_forwards"] == rows[0]["new_tokens"]
    completed = subprocess.run([sys.executable, "-m", "jetspec_hf.bench", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "--budgets" in completed.stdout and "--dflash-head" in completed.stdout


def test_prompt_sources(tmp_path):
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text('{"question": "q1"}\n\n{"text": "t2"}\n{"turns": ["first turn", "second"]}\n')
    assert load_prompts(str(jsonl)) == ["q1", "t2", "first turn"]
    assert load_prompts(str(jsonl), samples=2) == ["q1", "t2"]
    with pytest.raises(ValueError, match="no prompt field"):
        load_prompts(str(jsonl), field="answer")

    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"problem": ["p1", "p2", "p3"]})}).save_to_disk(saved)
    assert load_prompts(str(saved), split="test", samples=2) == ["p1", "p2"]


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2]) == 2


def test_chat_template_wraps_each_prompt_as_a_user_turn():
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompts(tokenizer, ["abc"], chat_template=True, device="cpu")
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['content'] }}>{% endfor %}{% if add_generation_prompt %}=={% endif %}"
    )
    (wrapped,) = encode_prompts(tokenizer, ["abc"], chat_template=True, device="cpu")
    assert tokenizer.decode(wrapped[0]) == "<abc>=="
    (plain,) = encode_prompts(tokenizer, ["abc"], chat_template=False, device="cpu")
    assert tokenizer.decode(plain[0]) == "abc"


def test_without_target_the_bundled_pair_and_prompts_are_the_defaults():
    from jetspec_hf.bench.loading import BUNDLED, BUNDLED_PROMPTS
    from jetspec_hf.bench.options import parse_args

    if not (BUNDLED["target"].exists() and BUNDLED["head"].exists()):
        pytest.skip("bundled models not built")
    args = parse_args([])
    assert (args.target, args.head) == (str(BUNDLED["target"]), str(BUNDLED["head"]))
    assert args.dataset == str(BUNDLED_PROMPTS) and args.budgets == [8, 16, 32, 64]
    # An explicit target is never paired with the bundled head by accident.
    with pytest.raises(SystemExit):
        parse_args(["--target", str(BUNDLED["target"])])


def test_methods_are_interleaved_call_by_call(bench_files, tmp_path, monkeypatch):
    original = Method.generate
    calls = []

    def recording(self, batch, round_profiler=None):
        if round_profiler is None:
            calls.append((self.name, batch.input_ids.shape[1]))
        return original(self, batch, round_profiler)

    monkeypatch.setattr(Method, "generate", recording)
    argv = bench_argv(bench_files, tmp_path, "--methods", "lookup", "tree", "--profile-samples", "0", "--warmup",
                      "0", "--repeats", "2")
    assert main(argv) == 0
    names = ["plain", "HF prompt lookup (k=10)", "JetSpec tree b=4", "JetSpec tree b=8"]
    # For each prompt, each repeat calls every method once, in turn: no method runs twice in a row.
    assert [name for name, _ in calls] == names * 4
    assert len({length for _, length in calls[:8]}) == 1 and calls[0][1] != calls[8][1]


def test_compiled_rows_compile_plain_decoding_and_the_tree_path_alike(bench_files, tmp_path, monkeypatch):
    # Inductor would take minutes here: dynamo's "eager" backend runs the same compile path quickly.
    from jetspec_hf.bench import methods as bench_methods

    original = bench_methods.compile_settings

    def eager_backend():
        settings = original()
        settings["compile_config"].backend = "eager"
        return settings

    monkeypatch.setattr(bench_methods, "compile_settings", eager_backend)
    argv = bench_argv(bench_files, tmp_path, "--methods", "compiled", "--profile-samples", "0", "--samples", "1",
                      "--budgets", "4", "--warmup", "0")
    assert main(argv) == 0
    rows = json.loads((tmp_path / "benchmark.json").read_text())["methods"]
    assert [row["kind"] for row in rows] == ["plain", "plain-compiled", "jetspec-tree-compiled"]
    assert all(row["matches_plain"] for row in rows[1:])


def test_batches_compare_plain_and_tree_rows_and_report_the_ragged_cost(bench_files, tmp_path):
    argv = bench_argv(bench_files, tmp_path, "--methods", "lookup", "tree", "auto", "--batch-size", "2", "--samples",
                      "3", "--warmup", "0")
    assert main(argv) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["prompts"]["batch_size"] == 2
    rows = {row["kind"]: row for row in report["methods"]}
    # Prompt lookup in transformers takes one sequence: it says so instead of stopping the run.
    assert rows["hf-prompt-lookup"]["skipped_reason"]
    assert rows["jetspec-auto"]["matches_plain"]
    trees = [row for row in report["methods"] if row["kind"] == "jetspec-tree"]
    assert trees and all(row["matches_plain"] and row["speedup"] > 0 for row in trees)
    assert rows["plain"]["new_tokens"] == 3 * 12
    for entry in report["round_breakdown"]["methods"].values():
        assert 0.0 <= entry["padding_share"] < 1.0 and 0.0 <= entry["hole_share"] < 1.0
        assert entry["compact"] >= 0.0


def test_draft_window_rows_and_long_prompts_from_a_text_file(bench_files, tmp_path):
    text = tmp_path / "long.txt"
    text.write_text("".join(chr(36 + (i * 7) % 90) for i in range(400)))
    argv = bench_argv(bench_files, tmp_path, "--methods", "tree", "--draft-window", "8", "--dataset", str(text),
                      "--prompt-tokens", "120", "--profile-samples", "0", "--warmup", "0")
    assert main(argv) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    windowed = [row for row in report["methods"] if row["kind"] == "jetspec-windowed"]
    assert [row["tree_budget"] for row in windowed] == [4, 8]
    assert all(row["matches_plain"] is True and "window=8" in row["name"] for row in windowed)
    # The text file was cut into prompts of 120 characters (one token each with this tokenizer).
    assert report["prompts"]["samples"] == 2 and report["prompts"]["mean_prompt_tokens"] == 120
    assert (tmp_path / "benchmark.png").is_file()


def test_bad_draft_window_and_prompt_tokens_are_one_line_errors(bench_files, tmp_path, capsys):
    for flag, value in (("--draft-window", "0"), ("--prompt-tokens", "0")):
        with pytest.raises(SystemExit):
            main(bench_argv(bench_files, tmp_path, flag, value))
        assert f"{flag} must be >= 1" in capsys.readouterr().err


def test_json_schema_runs_every_method_under_the_grammar_with_grammar_blind_trees(bench_files, tmp_path):
    pytest.importorskip("xgrammar", reason="xgrammar is not installed (pip install 'jetspec_hf[clients]')")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "array", "items": {"type": "integer"}, "maxItems": 3}))
    argv = bench_argv(bench_files, tmp_path, "--methods", "chain", "tree", "grammar-blind", "--json-schema",
                      str(schema), "--profile-samples", "0", "--warmup", "0")
    assert main(argv) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["prompts"]["json_schema"] == str(schema)
    kinds = [row["kind"] for row in report["methods"]]
    assert kinds.count("jetspec-grammar-blind") == 2 and kinds.count("jetspec-tree") == 2
    assert all(row["matches_plain"] is True for row in report["methods"] if row["kind"] != "plain")
