"""The quickstart runs on the bundled pair and writes plain text when its output is not a terminal."""

import subprocess
import sys
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_into_a_pipe_prints_no_terminal_codes():
    completed = subprocess.run([sys.executable, str(QUICKSTART), "--pair", "bundled", "--prompts", "1",
                                "--max-new-tokens", "8"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "identical: True" in completed.stdout
    assert "\033[" not in completed.stdout
