"""A Hub client cache written by hand, laid out exactly as `hf_hub_download` leaves it (for offline tests)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# File types the Hub stores with Git LFS; their cache blobs are named by sha256, other files' by git's blob sha1.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".msgpack", ".h5")


def _etag(relative_path: str, content: bytes) -> str:
    if relative_path.endswith(LFS_SUFFIXES):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def add_to_hub_cache(cache_dir: Path, repo_id: str, folder: Path, refs=("main",), commit: str | None = None) -> str:
    """Store `folder`'s files as one commit of model repo `repo_id` in a Hub cache, exactly as `hf_hub_download`
    leaves them: `models--org--name/blobs/<etag>`, `snapshots/<commit>/<path>` as relative symlinks to the blobs,
    and `refs/<ref>` files holding the commit hash. Returns the commit hash."""
    files = {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts}
    if commit is None:
        digest = hashlib.sha1()
        for name, content in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha1(content).digest())
        commit = digest.hexdigest()
    repo_dir = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        blob = repo_dir / "blobs" / _etag(name, content)
        if not blob.exists():
            blob.write_bytes(content)
        link = repo_dir / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        ref_file = repo_dir / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(commit)
    return commit
