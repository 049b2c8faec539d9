"""The synthetic benchmark's report: the goals it checks, and its Markdown tables."""

from __future__ import annotations

from ..report import _format

# The goals the report checks. The host-sync count holds on any device; the two timing goals are about a GPU.
MAX_HOST_SYNCS_PER_ROUND = 2
MAX_OVERHEAD_OVER_VERIFY = 0.10
OVERHEAD_GOAL_BUDGET = 64
MIN_SPEEDUP_OVER_BOUND = 0.85


def _ran(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row.get("skipped_reason") is None]


def goals(report: dict) -> dict:
    """Each goal with what was measured against it; `met` is `None` where nothing was measured."""
    variants = _ran(report["variants"])
    syncs = [variant["host_syncs"]["per_round_max"] for variant in variants if variant.get("host_syncs")]
    worst_overhead = {}  # per variant, the largest overhead / verify over its τ at the goal's budget
    for variant in variants:
        overheads = [row["loop_overhead_over_verify"] for row in _ran(variant.get("forced", []))
                     if row["budget"] == OVERHEAD_GOAL_BUDGET and row["loop_overhead_over_verify"] is not None]
        if overheads:
            worst_overhead[variant["name"]] = max(overheads)
    ratios = [row["speedup_over_bound"] for variant in variants for row in _ran(variant.get("forced", []))
              if row["speedup_over_bound"] is not None]
    return {
        "host_syncs_per_round": {
            "target": f"<= {MAX_HOST_SYNCS_PER_ROUND}",
            "measured_max": max(syncs) if syncs else None,
            "met": max(syncs) <= MAX_HOST_SYNCS_PER_ROUND if syncs else None,
        },
        "loop_overhead_over_verify": {
            "target": f"< {MAX_OVERHEAD_OVER_VERIFY} at budget {OVERHEAD_GOAL_BUDGET} (GPU, 8B shapes)",
            "measured_worst": {name: round(value, 3) for name, value in worst_overhead.items()},
            "met": all(value < MAX_OVERHEAD_OVER_VERIFY for value in worst_overhead.values())
            if worst_overhead else None,
        },
        "speedup_over_bound": {
            "target": f">= {MIN_SPEEDUP_OVER_BOUND} (GPU), bound = τ × plain step / verify forward",
            "rows_met": sum(ratio >= MIN_SPEEDUP_OVER_BOUND for ratio in ratios),
            "rows": len(ratios),
            "measured_min": round(min(ratios), 3) if ratios else None,
            "met": all(ratio >= MIN_SPEEDUP_OVER_BOUND for ratio in ratios) if ratios else None,
        },
    }


def _table(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned; short rows (a skipped entry
    and its reason) are padded with empty cells."""
    lines = ["| " + " | ".join(columns) + " |", "| --- | " + " | ".join("---:" for _ in columns[1:]) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(row + [""] * (len(columns) - len(row))) + " |")
    return "\n".join(lines)


def variants_table(report: dict) -> str:
    columns = ["variant", "plain forward ms", "plain step ms (in generate)", "prefill ms", "draft ms",
               "host syncs / round (max)", "CUDA syncs / round (max)", "overhead / verify, synced profile"]
    rows = []
    for variant in report["variants"]:
        if variant.get("skipped_reason") is not None:
            rows.append([variant["name"], f"skipped: {variant['skipped_reason']}"])
            continue
        if variant.get("failed"):
            rows.append([variant["name"], f"**failed**: {variant['failed'].splitlines()[0]}"])
            continue
        plain, syncs = variant.get("plain") or {}, variant.get("host_syncs") or {}
        # RoundProfiler synchronises around every stage: its round / verify next to the unsynchronised one.
        round_over_verify = (variant.get("synced_profile") or {}).get("round_over_verify")
        values = [plain.get("forward_ms"), plain.get("step_ms"), plain.get("prefill_ms"), variant.get("draft_ms"),
                  syncs.get("per_round_max"), syncs.get("cuda_per_round_max"),
                  None if round_over_verify is None else round_over_verify - 1]
        rows.append([variant["name"], *map(_format, values)])
    return _table(columns, rows)


def verify_table(report: dict) -> str:
    variants = [variant for variant in _ran(report["variants"]) if variant.get("verify")]
    if not variants:
        return "(no verify timings)"
    rows = []
    for index, entry in enumerate(variants[0]["verify"]):
        cells = [str(entry["nodes"])]
        for variant in variants:
            timing = variant["verify"][index] if index < len(variant["verify"]) else None
            cells.append("–" if timing is None else f"{timing['ms']:.2f} ({timing['over_plain_forward']:.2f}×)")
        rows.append(cells)
    return _table(["N", *(variant["name"] for variant in variants)], rows)


def forced_table(report: dict) -> str:
    columns = ["variant", "budget", "τ target", "τ", "ms / token", "speed-up", "bound", "speed-up / bound",
               "round ms", "verify ms", "loop overhead ms", "overhead / verify", "matches plain"]
    rows = []
    for variant in _ran(report["variants"]):
        for row in variant.get("forced", []):
            cells = [variant["name"], str(row["budget"]), _format(row["tau_target"], 1)]
            if row.get("skipped_reason") is not None:
                rows.append([*cells, f"skipped: {row['skipped_reason']}"])
                continue
            rows.append([
                *cells, _format(row["tau"]), _format(row["ms_per_token"]), f"{_format(row['speedup'])}×",
                f"{_format(row['bound'])}×", *map(_format, (row["speedup_over_bound"], row["round_ms"],
                                                            row["verify_ms"], row["loop_overhead_ms"],
                                                            row["loop_overhead_over_verify"], row["matches_plain"])),
            ])
    return _table(columns, rows)


def goals_lines(goal_report: dict) -> str:
    def verdict(goal):
        return {True: "met", False: "**not met**", None: "not measured"}[goal["met"]]

    syncs, overhead, speedup = (goal_report[name] for name in
                                ("host_syncs_per_round", "loop_overhead_over_verify", "speedup_over_bound"))
    return "\n".join([
        f"- host syncs per round {syncs['target']}: {verdict(syncs)} (max {_format(syncs['measured_max'])})",
        f"- loop overhead / verify {overhead['target']}: {verdict(overhead)} ({overhead['measured_worst'] or '–'})",
        f"- speed-up / bound {speedup['target']}: {verdict(speedup)} ({speedup['rows_met']} of {speedup['rows']} "
        f"rows, min {_format(speedup['measured_min'])})",
    ])


def auto_costs_table(report: dict) -> str:
    """The verify tables `tree_budget="auto"` measured (ms per node count and prefix length), per variant."""
    sections = []
    for variant in _ran(report["variants"]):
        costs = variant.get("auto_costs")
        if not costs:
            continue
        rows = [[str(prefix), *(f"{ms:.2f}" for ms in row)] for prefix, row in zip(costs["prefix_lengths"],
                                                                                  costs["ms"])]
        sections.append(f"{variant['name']}, measured in {costs['seconds']:.1f} s:\n\n"
                        + _table(["prefix \\ nodes", *map(str, costs["node_counts"])], rows))
    return "\n\n".join(sections) or "(not measured)"


def markdown(report: dict) -> str:
    """The whole report as Markdown: environment line, variants, verify sweep, forced τ, goals."""
    environment = report["environment"]
    settings = report["settings"]
    where = environment.get("gpu") or environment.get("cpu")
    header = (f"Synthetic {report['shapes']['name']} shapes, {environment['dtype']} on {environment['device']} "
              f"({where}), torch {environment['torch']}, transformers {environment['transformers']}; prompt "
              f"{settings['prompt_tokens']} tokens, {settings['max_new_tokens']} new tokens per call, "
              f"{report['elapsed_seconds']:.0f} s in all.")
    return "\n\n".join([
        header,
        variants_table(report),
        f"Verify forward, ms (× plain forward), prefix {settings['prompt_tokens']}:",
        verify_table(report),
        "Forced τ (bound = τ × plain step in generate / verify forward at the round's tree size; round and verify "
        "ms from CUDA events on a GPU, so no extra syncs, or the wall clock on a CPU; loop overhead = round − "
        "verify):",
        forced_table(report),
        "Goals:",
        goals_lines(report["goals"]),
        "`tree_budget=\"auto\"` cost table (verify forward ms, as its first call measures it):",
        auto_costs_table(report),
    ]) + "\n"


__all__ = ["auto_costs_table", "forced_table", "goals", "goals_lines", "markdown", "variants_table", "verify_table"]
