"""Tiny models and prompts saved to disk for `jetspec-hf bench` runs in the tests (the `bench_files` fixture)."""

import json
from pathlib import Path

from tiny_models import tiny_head, tiny_target, tiny_tokenizer

# Printable characters of the tiny character-level vocabulary (ids 3..95 are chr(36)..chr(128)).
PROMPTS = ["abcabcabcabc", "hello=world;hello=", "xyzxyz01"]
BUDGETS = ["4", "8"]


def save_bench_files(root: Path) -> Path:
    """A tiny target (with tokenizer), JetSpec and DFlash heads, a draft LM, and a JSONL prompt file under `root`."""
    target = tiny_target()
    target.save_pretrained(root / "target")
    tiny_tokenizer().save_pretrained(root / "target")
    tiny_head(target, causal=True, seed=1).save_pretrained(root / "jetspec_head")
    tiny_head(target, causal=False, seed=2).save_pretrained(root / "dflash_head")
    tiny_target(seed=3).save_pretrained(root / "draft_lm")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"file": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return root


def bench_argv(root, output_dir, *extra):
    return [
        "--target", str(root / "target"),
        "--head", str(root / "jetspec_head"),
        "--dflash-head", str(root / "dflash_head"),
        "--draft-lm", str(root / "draft_lm"),
        "--dataset", str(root / "prompts.jsonl"),
        "--samples", "2",
        "--max-new-tokens", "12",
        "--budgets", *BUDGETS,
        "--device", "cpu",
        "--output-dir", str(output_dir),
        "--no-progress",
        # One thread: the tiny models gain nothing from more, and a busy machine makes two threads spin-wait.
        "--threads", "1",
        *extra,
    ]
