"""Uploading a prepared head folder to the Hub: checked first, and only the files a model repository needs."""

from __future__ import annotations

import glob
from pathlib import Path

from ..log import get_logger
from .checks import check_hub_folder
from .files import repository_files

logger = get_logger(__name__)


def push_head_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    base_model_config=None,
    api=None,
):
    """Create `repo_id` if needed and upload a folder written by `prepare_hub_folder`.

    The folder is checked first (`check_hub_folder`): a `custom_generate/generate.py` that would load the head
    from anywhere but `repo_id`, a head that does not fit the base model its card names, or bench results of
    another head are refused. Only the files a model repository needs are uploaded (`repository_files`): a training
    output's checkpoints, optimizer states, pickled RNG states and logs stay local.

    Args:
        folder: the prepared folder.
        repo_id: the model repository, `"org/name"`.
        token: a Hub token (default: the logged-in one).
        private: visibility when the repository is created.
        revision: branch to commit to (default: the main branch).
        commit_message: default "Upload JetSpec draft head".
        create_pr: open a pull request instead of committing directly.
        base_model_config: the base model's config, to check the head against without reading it from the Hub.
        api: the `huggingface_hub.HfApi` client to use (default: a new one with `token`).

    Returns:
        The `CommitInfo` of the upload.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    problems = check_hub_folder(folder, repo_id, base_model_config=base_model_config)
    if problems:
        raise ValueError(f"{folder} is not ready to push to {repo_id}: " + "; ".join(problems) + ".")
    files = repository_files(folder)
    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, token=token, repo_type="model", exist_ok=True)
    logger.info("uploading %d files of %s to %s", len(files), folder, repo_id)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=commit_message or "Upload JetSpec draft head",
        token=token,
        create_pr=create_pr,
        # Exact paths (escaped: the Hub client reads them as patterns), so nothing else is picked up.
        allow_patterns=[glob.escape(path) for path in files],
    )


__all__ = ["push_head_to_hub"]
