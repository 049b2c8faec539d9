"""The results section of a model card, from a `jetspec-hf bench` JSON report.

A report names the models and prompt file it ran as given on its command line, often local paths; a card shows a
Hub repo id as it is and a local path by its last component only, so that no card carries a path of the machine
it was made on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import PurePath

from .card_facts import table_cell

# `org/name`: the shape of a Hub repository id.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_local_path(name: str) -> bool:
    """Whether `name` is (or can only be) a path on this machine rather than a Hub repo id."""
    return os.path.exists(name) or _REPO_ID.fullmatch(name) is None


def public_name(name: str | None) -> str | None:
    """A repo id or dataset name as it is; a local path as its last component (`/home/me/runs/head` -> `head`)."""
    if name and ("/" in name or os.sep in name) and is_local_path(name):
        return PurePath(name).name
    return name


def summarize_bench(bench: Mapping | None) -> dict | None:
    """Table rows and environment for the card's results section from a bench JSON (`None` when there is none).

    Expected shape (fields may be missing; they print as a dash): `{"environment": {"device", "dtype", "torch",
    "transformers", ...}, "target", "head", "prompts": {...}, "methods": [{"name", "kind", "tree_budget", "tau",
    "tokens_per_second", "speedup", "matches_plain", "skipped_reason"}]}`.
    """
    if not bench:
        return None
    environment = bench.get("environment") or {}
    hardware = environment.get("gpu") or environment.get("cpu")
    device = environment.get("device")
    setup = [
        ("hardware", f"{hardware} ({device})" if hardware and device else hardware or device),
        ("dtype", environment.get("dtype")),
        ("torch", environment.get("torch")),
        ("transformers", environment.get("transformers")),
        ("target", public_name(bench.get("target"))),
        ("head", public_name(bench.get("head"))),
    ]
    prompts = bench.get("prompts") or {}
    if prompts:
        described = [f"{prompts['samples']} prompts" if prompts.get("samples") is not None else None,
                     f"from {public_name(prompts['source'])}" if prompts.get("source") else None,
                     f"{prompts['max_new_tokens']} new tokens each" if prompts.get("max_new_tokens") else None]
        setup.append(("prompts", ", ".join(part for part in described if part) or None))
    rows = []
    for method in bench.get("methods") or []:
        skipped = method.get("skipped_reason")
        rows.append(
            {
                "name": table_cell(method.get("name")),
                "kind": table_cell(method.get("kind")),
                "tree_budget": table_cell(method.get("tree_budget")),
                "tau": table_cell(method.get("tau")),
                "tokens_per_second": table_cell(method.get("tokens_per_second"), digits=1),
                "speedup": table_cell(method.get("speedup"), suffix="×"),
                "matches_plain": table_cell(method.get("matches_plain")),
                "skipped": table_cell(str(skipped).strip().splitlines()[0]) if skipped else None,
            }
        )
    return {
        "setup": [{"name": name, "value": table_cell(value)} for name, value in setup if value is not None],
        "rows": rows,
        "any_mismatch": any(method.get("matches_plain") is False for method in bench.get("methods") or []),
    }


__all__ = ["is_local_path", "public_name", "summarize_bench"]
