"""The table of scripts/smollm2_head_variants.sh: for each variant's fit, the held-out top-1 at depths 1-4 and the
mean accepted length per block at every evaluated step, and the seconds per training step.

    python scripts/smollm2_variant_table.py WORK_DIR/variants [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEPTHS = 4


def read_variant(folder: Path) -> dict:
    """The evaluations and the step time one fit logged (its `log.jsonl`)."""
    evaluations, elapsed = [], []
    for line in (folder / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval_top1_per_depth" in record:
            evaluations.append({"step": record["step"], "top1": record["eval_top1_per_depth"][:DEPTHS],
                                "mean_accepted": round(record["eval_mean_accepted"], 4)})
        elif "elapsed_s" in record:
            elapsed.append((record["step"], record["elapsed_s"]))
    # The training seconds per step between the first and the last logged step (evaluations fall in between and
    # are counted: they are what a fit of this length costs).
    (first_step, first_s), (last_step, last_s) = elapsed[0], elapsed[-1]
    seconds_per_step = (last_s - first_s) / max(last_step - first_step, 1)
    return {"evaluations": evaluations, "seconds_per_step": round(seconds_per_step, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants_dir")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    folders = sorted(path.parent for path in Path(args.variants_dir).glob("*/log.jsonl"))
    if not folders:
        print(f"no fits under {args.variants_dir}", file=sys.stderr)
        return 1
    results = {folder.name: read_variant(folder) for folder in folders}
    steps = sorted({e["step"] for result in results.values() for e in result["evaluations"]})
    header = " | ".join(f"step {step}: top-1 d1-{DEPTHS} / accepted" for step in steps)
    print(f"| variant | s/step | {header} |")
    print("|---|---:|" + "---|" * len(steps))
    for name, result in results.items():
        by_step = {e["step"]: e for e in result["evaluations"]}
        cells = []
        for step in steps:
            e = by_step.get(step)
            cells.append("–" if e is None else
                         " ".join(f"{value:.3f}" for value in e["top1"]) + f" / {e['mean_accepted']:.3f}")
        print(f"| {name} | {result['seconds_per_step']:.2f} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
