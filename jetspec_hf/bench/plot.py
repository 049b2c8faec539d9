"""The benchmark figure: τ vs tree budget and speedup vs tree budget, one line per head, peers for reference."""

from __future__ import annotations

from pathlib import Path

HEAD_LABELS = {"jetspec": "JetSpec head (causal)", "dflash": "DFlash head (bidirectional)"}
HEAD_COLORS = {"jetspec": "tab:blue", "dflash": "tab:orange"}
# Other budget series of the JetSpec head: kind -> (label, color, line style).
VARIANT_SERIES = {
    "jetspec-fanout": ("JetSpec head, full fan-out tree", "tab:blue", "v--"),
    "jetspec-hybrid": ("JetSpec head + prompt-lookup branch", "tab:green", "D-"),
    "jetspec-windowed": ("JetSpec head with a draft window", "tab:purple", "s-."),
}
# Methods without a fixed budget: horizontal reference lines (the auto budget picks its own every round).
PEER_STYLES = {"hf-assisted": ":", "hf-prompt-lookup": "-.", "hf-dflash": "--", "jetspec-auto": (0, (1, 1))}


def plot_report(rows: list[dict], path: Path, title: str | None = None) -> None:
    """Write a two-panel PNG from the JSON `methods` rows.

    Tree rows become one line per head (and per tree variant: full fan-out, prompt-lookup branch); each head's chain is a hollow marker at its budget; stock peers (assisted,
    prompt lookup, linear DFlash) have no budget, so they are horizontal reference lines on the speedup panel.
    """
    import matplotlib

    # Agg: no display is needed (or present on servers), and the PNG is the only product.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [row for row in rows if row["skipped_reason"] is None]
    figure, (tau_axis, speed_axis) = plt.subplots(1, 2, figsize=(12, 5.6))
    budgets_seen = set()
    for head, label in HEAD_LABELS.items():
        tree = sorted((row for row in ran if row["kind"] == f"{head}-tree"), key=lambda row: row["tree_budget"])
        chain = [row for row in ran if row["kind"] == f"{head}-chain"]
        color = HEAD_COLORS[head]
        if tree:
            budgets = [row["tree_budget"] for row in tree]
            budgets_seen.update(budgets)
            tau_axis.plot(budgets, [row["tau"] for row in tree], "o-", color=color, label=f"{label}, tree")
            speed_axis.plot(budgets, [row["speedup"] for row in tree], "o-", color=color, label=f"{label}, tree")
        for row in chain:
            budgets_seen.add(row["tree_budget"])
            tau_axis.plot([row["tree_budget"]], [row["tau"]], "s", mfc="none", color=color, label=f"{label}, chain")
            speed_axis.plot(
                [row["tree_budget"]], [row["speedup"]], "s", mfc="none", color=color, label=f"{label}, chain"
            )

    for kind, (label, color, style) in VARIANT_SERIES.items():
        series = sorted((row for row in ran if row["kind"] == kind), key=lambda row: row["tree_budget"])
        if series:
            budgets = [row["tree_budget"] for row in series]
            budgets_seen.update(budgets)
            tau_axis.plot(budgets, [row["tau"] for row in series], style, color=color, label=label)
            speed_axis.plot(budgets, [row["speedup"] for row in series], style, color=color, label=label)

    for row in ran:
        if row["kind"] in PEER_STYLES:
            color = HEAD_COLORS.get(row["head"], "tab:gray")
            style = dict(linestyle=PEER_STYLES[row["kind"]], color=color, alpha=0.7, label=row["name"])
            speed_axis.axhline(row["speedup"], **style)
            # For a stock peer, τ is tokens per target forward: the same quantity for a chain verifier.
            tau_axis.axhline(row["tau"], **style)
    speed_axis.axhline(1.0, color="black", linewidth=0.8, label="plain decoding")

    for axis, ylabel in ((tau_axis, "τ (tokens committed per round)"), (speed_axis, "speedup over plain (×)")):
        axis.set_xlabel("tree budget (nodes verified per round)")
        axis.set_ylabel(ylabel)
        if budgets_seen:
            axis.set_xscale("log", base=2)
            axis.set_xticks(sorted(budgets_seen))
            axis.set_xticklabels([str(budget) for budget in sorted(budgets_seen)])
        axis.grid(alpha=0.3)
    # One legend under both panels (the speedup panel has every entry), so that no line is hidden behind it.
    handles, labels = speed_axis.get_legend_handles_labels()
    rows = -(-len(labels) // 4)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.045 * rows, 1, 1))
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


__all__ = ["plot_report"]
