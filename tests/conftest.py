import os
import sys

import pytest
import torch

# Test helpers (tiny_models.py, bundled.py) live beside this file.
sys.path.insert(0, os.path.dirname(__file__))
# One thread: the models here are tiny, and idle OpenMP workers of a second thread fight for the two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory):
    """The bench's tiny models and prompts on disk (`bench_setup.py`), once per test module."""
    from bench_setup import save_bench_files

    return save_bench_files(tmp_path_factory.mktemp("bench_models"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_cost_measurement: time the target's verify forwards for real instead of the stub table"
    )


# A verify-cost table shaped like the bundled pair's on a CPU (seconds per node count, at three prefix lengths).
STUB_NODE_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STUB_PREFIX_LENGTHS = (64, 1024, 4096)
STUB_VERIFY_SECONDS = (
    (0.0050, 0.0052, 0.0055, 0.0060, 0.0070, 0.0095, 0.0150, 0.0260, 0.0480),
    (0.0065, 0.0068, 0.0072, 0.0080, 0.0095, 0.0125, 0.0190, 0.0320, 0.0580),
    (0.0110, 0.0115, 0.0125, 0.0140, 0.0175, 0.0240, 0.0370, 0.0620, 0.1150),
)


@pytest.fixture(autouse=True)
def _stub_cost_measurement(monkeypatch, request):
    """`tree_budget="auto"` times the target's verify forwards on its first call in a process; tests get a fixed
    table and draft time instead, so that they run fast and alike on every machine. Tests of the measurement
    itself are marked `real_cost_measurement` (or call `measure_verify_costs` directly)."""
    if request.node.get_closest_marker("real_cost_measurement"):
        return
    from jetspec_hf.generation.budget import auto as auto_budget, measurement as cost_measurement
    from jetspec_hf.generation.budget.costs import VerifyCosts

    table = VerifyCosts(STUB_NODE_COUNTS, STUB_PREFIX_LENGTHS, STUB_VERIFY_SECONDS)
    monkeypatch.setattr(cost_measurement, "measure_verify_costs", lambda *args, **kwargs: table)
    monkeypatch.setattr(auto_budget, "measure_draft_seconds", lambda *args, **kwargs: 0.003)
