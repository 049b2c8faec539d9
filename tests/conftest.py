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
