"""A clear error when a repo id is neither a local folder, nor in the Hub cache, nor reachable.

transformers reports that case as "We couldn't connect to 'https://huggingface.co' to load the files", without the
repo id, the revision, the cache folder it looked in, or whether offline mode was on. This module imports nothing
from the package, so that `from_pretrained` can use it lazily without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError


def _caused_by_missing_cache_entry(error: BaseException) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, LocalEntryNotFoundError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def unresolved_repo_error(
    pretrained_model_name_or_path: str | os.PathLike,
    error: BaseException,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    filename: str = "config.json",
    what: str = "draft head",
) -> OSError | None:
    """An `OSError` that says what could not be found, where it was looked for, and how to fix it.

    Returns `None` (keep the original error) unless `error` comes from a repo id whose `filename` is absent from the
    local cache and that the Hub could not serve (offline mode, or no connection): a local folder, a gated repo,
    a missing file in a reachable repo keep transformers' own, more specific, messages.
    """
    name = str(pretrained_model_name_or_path)
    if os.path.isdir(name) or not _caused_by_missing_cache_entry(error):
        return None
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    if isinstance(try_to_load_from_cache(name, filename, cache_dir=str(cache), revision=revision), str):
        return None  # the cache has it: the failure is about something else
    revision_text = f" at revision {revision!r}" if revision else ""
    download = f"hf download {name}" + (f" --revision {revision}" if revision else "")
    if constants.is_offline_mode():
        why = "offline mode is on (HF_HUB_OFFLINE=1), so the Hub was not asked"
    else:
        why = "the Hub could not be reached"
    return OSError(
        f"Cannot load the {what} {name!r}{revision_text}: it is not a local folder, the Hugging Face cache at "
        f"{cache} has no {filename} for it, and {why}. Check the repo id (and `revision=`), download it once where "
        f"the Hub is reachable (`{download}`) and point "
        "HF_HUB_CACHE or `cache_dir=` at that cache, or pass the path of a local folder instead."
    )


__all__ = ["unresolved_repo_error"]
