"""Optional dependencies (pip extras), checked before any work starts.

A plain `pip install jetspec_hf` covers decoding and loading. Cards need jinja2, the benchmark's plot needs
matplotlib, and `datasets` folders need `datasets`: each command checks what it will need up front, so that a
missing package stops it with the install line instead of failing after files were written or a long run.
"""

from __future__ import annotations

import importlib.util

# extra -> the packages it installs (mirrors [project.optional-dependencies] in pyproject.toml)
EXTRAS = {
    "hub": ("jinja2",),
    "bench": ("matplotlib", "datasets"),
    "train": ("datasets",),
}


class MissingExtraError(ImportError):
    """An optional dependency that the requested work needs is not installed."""


def is_installed(module: str) -> bool:
    """Whether `module` can be imported (looked up without importing it)."""
    return importlib.util.find_spec(module) is not None


def require_extra(extra: str, *modules: str, purpose: str) -> None:
    """Raise `MissingExtraError` naming the install line when any of `modules` is missing.

    Args:
        extra: the pip extra that installs them (a key of `EXTRAS`).
        modules: import names to check (default: every package of the extra).
        purpose: what needs them, as the start of a sentence ("Rendering a model card").
    """
    missing = [module for module in modules or EXTRAS[extra] if not is_installed(module)]
    if missing:
        raise MissingExtraError(
            f"{purpose} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f'pip install "jetspec_hf[{extra}]"'
        )


__all__ = ["EXTRAS", "MissingExtraError", "is_installed", "require_extra"]
