"""Turning measured results into the report: JSON rows, the per-round breakdown, and Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path

from ..generation.profiling import ROUND_STAGES, RoundProfiler
from .measure import MethodResult
from .methods import Method


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def method_row(result: MethodResult, plain: MethodResult) -> dict:
    """One entry of the JSON `methods` list (the keys Hub cards are rendered from, plus a few details)."""
    method = result.method
    speed, plain_speed = result.tokens_per_second, plain.tokens_per_second
    return {
        "name": method.name,
        "kind": method.kind,
        "head": method.head,
        "tree_budget": method.tree_budget,
        "tree_width": method.tree_width,
        "tree_expansion": method.tree_expansion,
        "lookup_tokens": method.lookup_tokens,
        "tau": _rounded(result.tau),
        "target_forwards_per_token": _rounded(result.target_forwards_per_token),
        "tokens_per_second": _rounded(speed, 3),
        # A ratio of throughputs measured in the same process on the same prompts.
        "speedup": _rounded(speed / plain_speed, 3) if speed and plain_speed else None,
        "matches_plain": result.matches_plain,
        "skipped_reason": result.skipped_reason,
        "new_tokens": result.new_tokens,
        "seconds": _rounded(result.seconds),
        "target_forwards": result.target_forwards if result.skipped_reason is None else None,
        "rounds": result.rounds or None,
        "mean_tree_size": _rounded(result.tree_nodes / result.rounds, 2) if result.rounds else None,
        "mismatches": [mismatch.__dict__ for mismatch in result.mismatches],
    }


def round_breakdown(method: Method, profiler: RoundProfiler, generations: int) -> dict:
    """Milliseconds per round of each stage of the tree loop, from a profiled pass of `generations` prompts.

    `other` is the loop's time outside the named stages (Python between stages, and generate's own setup,
    amortised over the rounds). `round` excludes the prompt's prefill, which is reported per generation.
    `round_over_verify` is round time / verify-forward time: 1.0 would mean drafting and bookkeeping for free.
    """
    summary = profiler.summary()
    rounds = max(profiler.rounds, 1)
    generations = max(generations, 1)
    per_round = {name: 1000.0 * summary.get(name, 0.0) / rounds for name in (*ROUND_STAGES, "other")}
    round_ms = 1000.0 * (summary["total"] - summary.get("prefill", 0.0)) / rounds
    entry = {
        "head": method.head,
        "tree_budget": method.tree_budget,
        "tree_width": method.tree_width,
        "rounds": profiler.rounds,
        "prefill_ms_per_generation": _rounded(1000.0 * summary.get("prefill", 0.0) / generations, 3),
        **{name: _rounded(value, 3) for name, value in per_round.items()},
        "accept_plus_cache": _rounded(per_round["accept"] + per_round["cache"], 3),
        "round": _rounded(round_ms, 3),
        # Batches: the share of verified slots that padded smaller trees, and of kept cache columns that are holes.
        "padding_share": _share(profiler.counts, "padding_slots", "verify_slots"),
        "hole_share": _share(profiler.counts, "hole_slots", "kept_slots"),
        "round_over_verify": _rounded(round_ms / per_round["verify"], 3) if per_round["verify"] > 0 else None,
    }
    return entry


def _share(counts: dict, part: str, whole: str) -> float | None:
    return _rounded(counts[part] / counts[whole], 3) if counts.get(whole) else None


def _format(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _first_line(text: str, limit: int = 90) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    line = line.replace("|", "\\|")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def methods_table(rows: list[dict]) -> str:
    """The Markdown table of every method (skipped ones with their reason)."""
    lines = [
        "| method | budget | width | τ | target fwd / token | tokens/s | speedup | matches plain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for row in rows:
        if row["skipped_reason"] is not None:
            lines.append(f"| {row['name']} | | | | | | | skipped: {_first_line(row['skipped_reason'])} |")
            continue
        lines.append(
            f"| {row['name']} | {_format(row['tree_budget'])} | {_format(row['tree_width'])} | "
            f"{_format(row['tau'])} | {_format(row['target_forwards_per_token'], 3)} | "
            f"{_format(row['tokens_per_second'], 1)} | {_format(row['speedup'])}× | "
            f"{_format(row['matches_plain'])} |"
        )
    return "\n".join(lines)


def breakdown_table(breakdown: dict) -> str:
    """The Markdown table of milliseconds per round, per profiled tree method."""
    lines = [
        "| method | rounds | draft | tree | verify | accept+cache | compact | other | round | round / verify "
        "| padding nodes | cache holes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in breakdown.get("methods", {}).items():
        lines.append(
            f"| {name} | {entry['rounds']} | {_format(entry['draft'])} | {_format(entry['tree'])} | "
            f"{_format(entry['verify'])} | {_format(entry['accept_plus_cache'])} | {_format(entry['compact'])} | "
            f"{_format(entry['other'])} | {_format(entry['round'])} | {_format(entry['round_over_verify'])} | "
            f"{_format(entry['padding_share'])} | {_format(entry['hole_share'])} |"
        )
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    """Write `report` as indented UTF-8 JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = ["breakdown_table", "method_row", "methods_table", "round_breakdown", "write_json"]
