"""`jetspec-hf bench` as a newcomer meets it: help and argument errors answer before torch is imported, with one
line each, and a run says what it will do before it starts."""

import subprocess
import sys

import pytest

CHECK = """
import sys
from jetspec_hf.bench import main
try:
    main({argv!r})
except SystemExit as exit:
    print("exit", exit.code)
print("torch imported:", "torch" in sys.modules)
"""


def run_bench(argv):
    result = subprocess.run([sys.executable, "-c", CHECK.format(argv=argv)], capture_output=True, text=True,
                            timeout=120)
    return result.stdout, result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--help"], None),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--methods", "bogus"], "invalid choice: 'bogus'"),
        (["--dataset", "/nonexistent.jsonl"], "--dataset /nonexistent.jsonl: no such file or folder"),
        (["--head", "some/head"], "need --target"),
        (["--json-schema", "/nonexistent.json"], "--json-schema /nonexistent.json: no such file"),
        (["--target", "./no-such-target", "--head", "./no-such-head"], "--target ./no-such-target: no such file"),
    ],
)
def test_help_and_argument_errors_come_before_torch(argv, message):
    out, err = run_bench(argv)
    assert "torch imported: False" in out
    if message is None:
        assert "exit 0" in out and "--budgets" in out
    else:
        assert "exit 2" in out
        error_lines = [line for line in err.splitlines() if "error:" in line]
        assert len(error_lines) == 1 and message in error_lines[0]
        assert "Traceback" not in err


def test_a_run_says_what_it_will_do_first():
    from jetspec_hf.bench.options import describe_run, parse_args

    line = describe_run(parse_args(["--samples", "3", "--max-new-tokens", "16", "--methods", "tree"]))
    assert "3 prompts" in line and "16 new tokens" in line and "plain decoding and tree" in line


def test_the_prompt_field_default_is_stated_the_same_everywhere():
    from jetspec_hf.bench.options import build_parser
    from jetspec_hf.prompts import PROMPT_FIELDS
    from jetspec_hf.training.__main__ import build_parser as train_parser

    stated = ", ".join(PROMPT_FIELDS)
    assert stated in " ".join(build_parser().format_help().split())
    assert stated in " ".join(train_parser("generate-data").format_help().split())
