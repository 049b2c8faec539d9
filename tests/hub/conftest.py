"""Fixtures of the Hub tests: tiny models, offline mode, a working directory with no model folders, a base model in
a Hub cache."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from hub_cache import add_to_hub_cache
from tiny_models import tiny_head, tiny_target

# The repo id under which the tiny target is found in the test Hub cache (see `base_model`).
BASE_MODEL = "tiny-org/tiny-qwen3"


@pytest.fixture
def offline(monkeypatch):
    """Offline mode as `HF_HUB_OFFLINE=1` gives it. huggingface_hub reads the variable once, at import, into
    `constants.HF_HUB_OFFLINE`, which `is_offline_mode()` returns: both are set."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert huggingface_hub.constants.is_offline_mode()


@pytest.fixture(autouse=True)
def _hub_unreachable(offline):
    """The Hub is never reached from a test: a repo id resolves from a local cache or not at all, at once."""


@pytest.fixture
def base_model(tmp_path, target, monkeypatch):
    """`BASE_MODEL`, the tiny target, in the default Hub cache (as `hf download` would leave it)."""
    folder = tmp_path / "base_model"
    target.save_pretrained(folder)
    cache = tmp_path / "base-model-cache"
    add_to_hub_cache(cache, BASE_MODEL, folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return BASE_MODEL


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
