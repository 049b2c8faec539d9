"""A bench report records which weights it measured, so that a model card can refuse another head's results."""

import json

from jetspec_hf.bench import main
from jetspec_hf.weights_fingerprint import folder_fingerprint
from test_bench import bench_argv, bench_files  # noqa: F401  (bench_files is a fixture)


def test_report_records_the_fingerprints_of_the_heads(bench_files, tmp_path):  # noqa: F811
    argv = bench_argv(bench_files, tmp_path, "--methods", "lookup", "--profile-samples", "0", "--warmup", "0")
    assert main(argv) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["head_fingerprint"] == folder_fingerprint(bench_files / "jetspec_head")
    assert report["dflash_head_fingerprint"] == folder_fingerprint(bench_files / "dflash_head")
    assert report["head_fingerprint"] != report["dflash_head_fingerprint"]
