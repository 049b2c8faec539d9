"""The training corpus for the bundled models: the Python standard library's own sources.

The stdlib is on every machine that runs Python, needs no download (the build machines
have no internet), and is plain code, which is what speculative decoding is good at.
Importing this module does no work; every function reads the disk when called.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path

# Directories whose contents are left out. site-packages holds third-party code (it
# differs per machine); test/tests are huge, repetitive fixture files; idlelib and lib2to3
# are applications rather than library code and would dominate some small batches.
SKIP_DIRS = frozenset({"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"})

# A few stdlib modules are generated tables hundreds of KB long (e.g. pydoc_data/topics.py,
# unicode tables); they are not representative code, so anything above this is skipped.
MAX_BYTES = 200 * 1024

# One file in HELDOUT_MOD is held out: ~7%. The choice hashes the relative path only, so it
# is the same on every machine and does not shift when other files come or go. 14 rather
# than 20 because 20 leaves only ~27 files on CPython 3.11, about a third of them codec
# tables, too few for ~40 distinct benchmark prompts.
HELDOUT_MOD = 14


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """All kept `.py` files under the stdlib as (relative posix path, absolute path),
    sorted by relative path so that every consumer sees the same order."""
    root = Path(root) if root is not None else stdlib_root()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into skipped directories at all.
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            try:
                if path.stat().st_size > MAX_BYTES:
                    continue
            except OSError:
                # Broken links and the like are not corpus material.
                continue
            found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def is_heldout(relpath: str) -> bool:
    """Whether a file (given by its relative posix path) belongs to the held-out split."""
    digest = hashlib.sha1(relpath.encode("utf-8")).hexdigest()
    return int(digest, 16) % HELDOUT_MOD == 0


def split_files(root: Path | None = None) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(train, heldout) lists of (relpath, path), each in sorted relative-path order."""
    train, heldout = [], []
    for relpath, path in stdlib_files(root):
        (heldout if is_heldout(relpath) else train).append((relpath, path))
    return train, heldout


def read_text(path: Path | str) -> str:
    """A source file's text. A handful of stdlib files carry odd bytes (test vectors,
    latin-1 comments); replacing them keeps the reader total instead of crashing."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as fh:
        text = fh.read()
    # Normalise Windows line endings so that the tokenizer never learns "\r\n" pieces.
    return text.replace("\r\n", "\n")
