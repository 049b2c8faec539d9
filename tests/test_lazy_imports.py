"""The command line answers `--help` without importing torch (or transformers' models): they take seconds to load,
and only the commands that run models need them."""

import subprocess
import sys

import pytest

# Run in a fresh interpreter: this test process has long imported torch.
PROBE = """
import sys
import jetspec_hf.cli
try:
    jetspec_hf.cli.main({argv!r})
except SystemExit:
    pass
heavy = sorted(name for name in ("torch", "transformers.modeling_utils") if name in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["--help"], ["export", "--help"], ["card", "--help"], ["train", "fit", "--help"]])
def test_help_imports_no_torch(argv):
    completed = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout
    assert completed.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_package_names_load_on_first_use():
    code = ("import sys, jetspec_hf; assert 'torch' not in sys.modules; "
            "from jetspec_hf import JetSpecDraftModel; from transformers import AutoConfig; "
            "assert AutoConfig.for_model('jetspec').__class__.__name__ == 'JetSpecConfig'; "
            "assert jetspec_hf.hub.__name__ == 'jetspec_hf.hub'; print('ok')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr
