import os
import sys

import pytest
import torch

# Test helpers (tiny_models.py, bundled.py) live beside this file.
sys.path.insert(0, os.path.dirname(__file__))
# Two threads at most: CI machines have two cores, and the tiny models gain nothing from more.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
