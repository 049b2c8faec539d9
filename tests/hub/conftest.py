"""Fixtures of the Hub tests: tiny models, offline mode, a working directory with no model folders."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from tiny_models import tiny_head, tiny_target


@pytest.fixture
def offline(monkeypatch):
    """Offline mode as `HF_HUB_OFFLINE=1` gives it. huggingface_hub reads the variable once, at import, into
    `constants.HF_HUB_OFFLINE`, which `is_offline_mode()` returns: both are set."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert huggingface_hub.constants.is_offline_mode()


@pytest.fixture
def away_from_folders(tmp_path, monkeypatch):
    """Work from an empty directory, so that a repo id like `org/name` cannot be mistaken for a local folder."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture(scope="module")
def target():
    return tiny_target()


@pytest.fixture(scope="module")
def head(target):
    return tiny_head(target, causal=True, target_layer_ids=[1, 2])


@pytest.fixture(scope="module")
def dflash_head(target):
    return tiny_head(target, causal=False, seed=2, target_layer_ids=[1, 2])


@pytest.fixture(autouse=True)
def _one_thread():
    """The Hub tests run tiny models only: one intra-op thread is as fast, and far faster when the machine is busy
    (idle OpenMP workers spin for a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
