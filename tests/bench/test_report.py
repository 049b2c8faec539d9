"""A bench report records which weights it measured, so that a model card can refuse another head's results; its
progress shows one bar over the whole run."""

import json

from bench_setup import bench_argv
from jetspec_hf.bench import main
from jetspec_hf.weights_fingerprint import folder_fingerprint


def test_report_records_the_fingerprints_of_the_heads(bench_files, tmp_path):
    argv = bench_argv(bench_files, tmp_path, "--methods", "lookup", "--profile-samples", "0", "--warmup", "0")
    assert main(argv) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["head_fingerprint"] == folder_fingerprint(bench_files / "jetspec_head")
    assert report["dflash_head_fingerprint"] == folder_fingerprint(bench_files / "dflash_head")
    assert report["head_fingerprint"] != report["dflash_head_fingerprint"]


def test_one_progress_bar_spans_the_whole_run(bench_files, tmp_path, capsys):
    argv = bench_argv(bench_files, tmp_path, "--methods", "lookup", "--profile-samples", "0", "--warmup", "1")
    argv.remove("--no-progress")
    assert main(argv) == 0
    # plain and prompt lookup: one warm-up call and two prompts each; the bar ends full, and stays.
    final_lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("benchmark: 100%") and "6/6" in line for line in final_lines)
