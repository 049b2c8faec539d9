"""Write the held-out prompt set used by tests and benchmarks.

    python scripts/bundled/make_prompts.py

Outputs (both committed, so tests do not depend on the local Python's stdlib version):
  scripts/bundled/heldout_files.txt     every held-out file, one relative path a line
  jetspec_hf/bundled/heldout_prompts.jsonl {"file": relpath, "prompt": text} a line
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# The file list stays with these scripts; the prompts ship with the package (the bench and quickstart defaults).
FILES_OUT = Path(__file__).resolve().parent / "heldout_files.txt"
PROMPTS_OUT = REPO / "jetspec_hf" / "bundled" / "heldout_prompts.jsonl"

MIN_LINES = 12
MAX_LINES = 25
MAX_CHARS = 600
# A prompt must contain at least one line that is code rather than comment or docstring,
# so that the continuation the model is asked for is code, not English prose.
CODE_LINE = re.compile(r"^(import |from \S+ import |def |class |async def |@|[A-Za-z_][\w.]* *=|if |try:)")


def header_end(text: str) -> int:
    """Index of the first line after the module docstring and any comment/blank lines
    around it (0 when the file starts with code or does not parse)."""
    lines = text.split("\n")
    start = 0
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError):
        body = []
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        start = body[0].end_lineno  # 1-based last line of the docstring = 0-based next line
    while start < len(lines) and (not lines[start].strip() or lines[start].lstrip().startswith("#")):
        start += 1
    return start


def make_prompt(text: str) -> str | None:
    """The first MIN_LINES..MAX_LINES whole lines of `text` that fit in MAX_CHARS, or None
    when they are too few or hold no code."""
    prompt = window(text.split("\n"))
    if prompt is None:
        # Many modules open with a long docstring or licence; a window over that is prose.
        # Then the window starts at the first line after that header instead.
        prompt = window(text.split("\n")[header_end(text):])
    return prompt


def window(lines: list[str]) -> str | None:
    """The first MIN_LINES..MAX_LINES of `lines` within MAX_CHARS, joined, or None."""
    kept: list[str] = []
    size = 0
    for line in lines[:MAX_LINES]:
        # +1 for the newline that joins this line to the previous one.
        if size + len(line) + 1 > MAX_CHARS:
            break
        kept.append(line)
        size += len(line) + 1
    # Drop trailing blank lines: a prompt that ends in blank lines says little about
    # what comes next and tokenizes differently from how the text appears in training.
    while kept and not kept[-1].strip():
        kept.pop()
    if len(kept) < MIN_LINES or not any(CODE_LINE.match(line) for line in kept):
        return None
    # No trailing newline: byte-level BPE merges "\n" with the next line's indentation,
    # so ending on the last character of a line lets the model choose that token itself.
    return "\n".join(kept)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files-out", type=Path, default=FILES_OUT)
    parser.add_argument("--prompts-out", type=Path, default=PROMPTS_OUT)
    args = parser.parse_args(argv)

    _, heldout = corpus.split_files()
    args.files_out.write_text("".join(rel + "\n" for rel, _ in heldout))

    records = []
    skipped = []
    for rel, path in heldout:
        # The codec modules under encodings/ are generated from one template, so their
        # beginnings are near-identical; they would make the benchmark look easier than
        # real code is. They stay in the held-out loss, just not in the prompts.
        if rel.startswith("encodings/"):
            skipped.append((rel, "codec table"))
            continue
        prompt = make_prompt(corpus.read_text(path))
        if prompt is None:
            skipped.append((rel, "no code near the start"))
            continue
        records.append({"file": rel, "prompt": prompt})

    with open(args.prompts_out, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"{len(heldout)} held-out files, {len(records)} prompts written to {args.prompts_out}")
    for rel, why in skipped:
        print(f"  skipped {rel}: {why}")


if __name__ == "__main__":
    main()
