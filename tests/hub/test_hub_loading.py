"""Loading heads by repo id through the Hub client's cache, offline: both formats, revisions, and the error when
a repo id is neither cached nor reachable."""

from __future__ import annotations

import inspect
import json
import shutil

import pytest
import torch
import transformers.dynamic_module_utils
import transformers.utils.hub
from huggingface_hub import constants
from transformers import AutoModel

from hub_cache import add_to_hub_cache
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.hub import unresolved_repo_error
from test_modeling_jetspec import write_released_checkpoint

REPO = "jetspec-test/tiny-head"


@pytest.fixture
def download_calls(monkeypatch):
    """Every cache look-up transformers makes through the Hub client, with the path it resolved: proof that loading
    went through the cache resolution and not through a local folder. (transformers resolves `revision` to a commit
    once per load, then serves each file of that commit from the cache with `try_to_load_from_cache`.)"""
    calls = []
    real = transformers.utils.hub.try_to_load_from_cache
    signature = inspect.signature(real)

    def spy(*args, **kwargs):
        path = real(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        calls.append({name: bound.get(name) for name in ("repo_id", "filename", "revision", "cache_dir")})
        calls[-1]["path"] = path
        return path

    monkeypatch.setattr(transformers.utils.hub, "try_to_load_from_cache", spy)
    return calls


def _cache_repo(folder, cache_dir, refs=("main",)):
    """Put `folder` in the cache as a commit of REPO, then delete it: the cache holds the only copy."""
    commit = add_to_hub_cache(cache_dir, REPO, folder, refs=refs)
    shutil.rmtree(folder)
    return commit


def _assert_from_snapshot(model, calls, cache_dir, commit):
    assert model.config.name_or_path == REPO
    snapshot = cache_dir / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit
    weights = [call for call in calls if call["filename"] == "model.safetensors"]
    assert weights and all(call["repo_id"] == REPO for call in weights)
    assert weights[-1]["revision"] == commit
    assert weights[-1]["path"] == str(snapshot / "model.safetensors")


def _equal_weights(model, reference) -> bool:
    state = reference.state_dict()
    return all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())


def test_our_format_by_repo_id_with_both_loaders(tmp_path, head, offline, away_from_folders, download_calls):
    head.save_pretrained(tmp_path / "head")
    cache = tmp_path / "cache"
    commit = _cache_repo(tmp_path / "head", cache)

    loaded = JetSpecDraftModel.from_pretrained(REPO, cache_dir=cache)
    _assert_from_snapshot(loaded, download_calls, cache, commit)
    assert _equal_weights(loaded, head)

    auto = AutoModel.from_pretrained(REPO, cache_dir=cache)
    assert isinstance(auto, JetSpecDraftModel)
    _assert_from_snapshot(auto, download_calls, cache, commit)
    assert _equal_weights(auto, head)


def test_default_cache_from_hf_hub_cache(tmp_path, head, offline, away_from_folders, monkeypatch, download_calls):
    # No `cache_dir=`: the client's default cache is used (HF_HUB_CACHE, read at import into the constants).
    head.save_pretrained(tmp_path / "head")
    cache = tmp_path / "hub-cache"
    commit = _cache_repo(tmp_path / "head", cache)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    loaded = AutoModel.from_pretrained(REPO)
    _assert_from_snapshot(loaded, download_calls, cache, commit)


def test_released_format_by_repo_id(tmp_path, offline, away_from_folders, download_calls):
    weights = write_released_checkpoint(tmp_path / "released", causal=False)
    cache = tmp_path / "cache"
    commit = _cache_repo(tmp_path / "released", cache)

    loaded = JetSpecDraftModel.from_pretrained(REPO, cache_dir=cache)
    _assert_from_snapshot(loaded, download_calls, cache, commit)
    assert loaded.config.causal_head is False and loaded.config.block_size == 8
    state = loaded.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in weights.items())


def test_automodel_refuses_a_released_head_unless_its_own_code_is_trusted(tmp_path, offline, away_from_folders,
                                                                          monkeypatch):
    # A released config says `model_type: qwen3`: AutoModel would build a plain Qwen3Model from it. It says how to
    # load the head instead, and still runs the repository's own code when that is asked for.
    folder = tmp_path / "released"
    write_released_checkpoint(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "dflash.DFlashDraftModel"}}))
    (folder / "dflash.py").write_text(REMOTE_DFLASH_CODE)
    cache = tmp_path / "cache"
    add_to_hub_cache(cache, REPO, folder)
    with pytest.raises(ValueError, match=r"JetSpecDraftModel\.from_pretrained\('jetspec-test/tiny-head'\)"):
        AutoModel.from_pretrained(REPO, cache_dir=cache)

    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    remote = AutoModel.from_pretrained(REPO, cache_dir=cache, trust_remote_code=True)
    assert type(remote).__name__ == "DFlashDraftModel" and not isinstance(remote, JetSpecDraftModel)
    assert isinstance(JetSpecDraftModel.from_pretrained(REPO, cache_dir=cache), JetSpecDraftModel)


# The smallest modeling file a released repository could ship for `trust_remote_code=True`: one of the checkpoint's
# weights (transformers >= 5.25 reads a loaded model's device from its parameters, so it needs at least one).
REMOTE_DFLASH_CODE = """
import torch
from transformers import PreTrainedModel, Qwen3Config


class DFlashDraftModel(PreTrainedModel):
    config_class = Qwen3Config

    def __init__(self, config):
        super().__init__(config)
        self.hidden_norm = torch.nn.RMSNorm(config.hidden_size)
        self.post_init()
"""


def test_revisions_by_commit_and_branch(tmp_path, target, head, offline, away_from_folders, download_calls):
    from tiny_models import tiny_head

    second = tiny_head(target, causal=True, seed=7, target_layer_ids=[1, 2])
    head.save_pretrained(tmp_path / "v1")
    second.save_pretrained(tmp_path / "v2")
    cache = tmp_path / "cache"
    first_commit = _cache_repo(tmp_path / "v1", cache, refs=("main",))
    second_commit = _cache_repo(tmp_path / "v2", cache, refs=("dev",))
    assert first_commit != second_commit

    main = JetSpecDraftModel.from_pretrained(REPO, cache_dir=cache)
    _assert_from_snapshot(main, download_calls, cache, first_commit)
    assert _equal_weights(main, head)

    for revision in (second_commit, "dev"):
        loaded = JetSpecDraftModel.from_pretrained(REPO, cache_dir=cache, revision=revision)
        _assert_from_snapshot(loaded, download_calls, cache, second_commit)
        assert _equal_weights(loaded, second)

    by_auto = AutoModel.from_pretrained(REPO, cache_dir=cache, revision="dev")
    assert _equal_weights(by_auto, second)


def _unresolved(callable_, *args, **kwargs) -> OSError:
    with pytest.raises(OSError) as info:
        callable_(*args, **kwargs)
    return info.value


def test_unresolvable_repo_gets_a_message_naming_it(tmp_path, head, offline, away_from_folders):
    cache = tmp_path / "cache"
    head.save_pretrained(tmp_path / "head")
    add_to_hub_cache(cache, REPO, tmp_path / "head")

    for name, revision in (("jetspec-test/not-cached", None), (REPO, "no-such-branch")):
        original = _unresolved(JetSpecDraftModel.from_pretrained, name, cache_dir=cache, revision=revision)
        clear = unresolved_repo_error(name, original, revision=revision, cache_dir=cache)
        assert isinstance(clear, OSError)
        message = str(clear)
        assert repr(name) in message and str(cache) in message and "HF_HUB_OFFLINE=1" in message
        assert "local folder" in message and "hf download" in message
        if revision:
            assert repr(revision) in message


def test_other_errors_keep_their_own_message(tmp_path, head, offline, away_from_folders):
    # A local folder without weights, or a cached repo: not a resolution failure, nothing to rewrite.
    (tmp_path / "empty").mkdir()
    error = OSError("something else")
    assert unresolved_repo_error(tmp_path / "empty", error) is None
    assert unresolved_repo_error("jetspec-test/not-cached", error, cache_dir=tmp_path) is None


def test_from_pretrained_error_names_the_repo(tmp_path, offline, away_from_folders):
    error = _unresolved(JetSpecDraftModel.from_pretrained, "jetspec-test/not-cached", cache_dir=tmp_path / "cache")
    assert "'jetspec-test/not-cached'" in str(error) and "HF_HUB_OFFLINE=1" in str(error)
