"""Train the two bundled draft heads on the bundled target: JetSpec (causal) and DFlash (bidirectional).

    python examples/bundled/train_heads.py [--work-dir DIR] [--steps N] [--sequential]

1. Self-distillation data: prompts are token windows (32-192 tokens) of train-split stdlib files; the target
   greedily continues each by CONTINUATION_TOKENS tokens. Held-out prompts come the same way from held-out files.
2. The target's tapped features (and final hidden states, for the KL term) are cached once for both heads.
3. Both heads train with IDENTICAL settings (data, seed, steps, schedule, anchors), except the block mask, as
   two processes in parallel (one CPU thread each).

Outputs: examples/models/jetspec_head/ and examples/models/dflash_head/ (bf16 weights, tokenizer, training_args.json,
eval_results.json, log.jsonl). Data, cache, checkpoints, logs and timings.json go to --work-dir (outside the repo
by default: they are large and reproducible).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TARGET_DIR = REPO / "examples" / "models" / "target"
HEAD_DIRS = {"jetspec": REPO / "examples" / "models" / "jetspec_head",
             "dflash": REPO / "examples" / "models" / "dflash_head"}
DEFAULT_WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jetspec_hf" / "bundled_heads"

SEED = 0
# Data: sized so that generation takes ~7 minutes on one CPU thread (measured: 426 s for the 2816 train prompts,
# 22 s for the 192 eval ones, in batches of 64 x 160 new tokens).
NUM_TRAIN_PROMPTS = 2816
NUM_EVAL_PROMPTS = 192
PROMPT_TOKENS = (32, 192)  # window length drawn uniformly: the head sees contexts of many lengths
CONTINUATION_TOKENS = 160
GENERATION_BATCH = 64

# Head: the target's width (hidden 256, 4 heads of 64, 2 kv heads), 2 layers. The MLP is 512 wide rather than the
# target's 768 so that the bf16 weights stay under 3 MB (768 would make 3.5 MB).
HEAD_ARGS = [
    "--num-layers", "2", "--num-heads", "4", "--num-kv-heads", "2", "--head-dim", "64",
    "--intermediate-size", "512", "--block-size", "16", "--target-layer-ids", "1", "3", "5",
]
# Objective and optimisation, shared by both heads. One step (8 sequences x 16 blocks of 16) takes ~0.75 s on an
# idle CPU thread and ~1.3 s while other jobs share the machine: 1200 steps (~3.4 epochs, fresh random anchors
# each time) is 15-25 minutes. lr 1e-3 rather than the recipe's 3e-4 default: a from-scratch run this short
# gets further with it, and 50 warmup steps keep the first updates stable.
STEPS = 1200
TRAIN_ARGS = [
    "--anchors-per-seq", "16", "--ce-weight", "1.0", "--kl-weight", "1.0", "--kl-temperature", "1.0",
    "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "50", "--min-lr-ratio", "0.1",
    "--weight-decay", "0.0", "--max-grad-norm", "1.0", "--seed", str(SEED),
    "--eval-batch-size", "16", "--log-steps", "25", "--save-dtype", "bfloat16",
    "--cache-dtype", "bfloat16", "--threads", "1",
]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's RNGs (prompt sampling uses its own seeded `random.Random`)."""
    random.seed(seed)
    torch.manual_seed(seed)


def sample_windows(files, tokenizer, count: int, seed: int) -> list[list[int]]:
    """`count` token windows from `files`, each of a random length in PROMPT_TOKENS at a random offset.

    Files are picked with probability proportional to their token count (so big modules are not under-sampled),
    and everything is drawn from one seeded generator: the same prompts on every run.
    """
    rng = random.Random(seed)
    tokenized = []
    for _, path in files:
        ids = tokenizer(corpus.read_text(path), add_special_tokens=False)["input_ids"]
        if len(ids) >= PROMPT_TOKENS[0]:
            tokenized.append(ids)
    weights = [len(ids) for ids in tokenized]
    windows = []
    for ids in rng.choices(tokenized, weights=weights, k=count):
        length = min(len(ids), rng.randint(*PROMPT_TOKENS))
        start = rng.randint(0, len(ids) - length)
        windows.append(ids[start : start + length])
    return windows


def make_data(work_dir: Path, target_dir: Path, num_train: int, num_eval: int) -> dict:
    """Generate the train and eval self-distillation sets (skipped when already in `work_dir`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jetspec_hf.training.data import generate_continuations, save_sequences

    train_path, eval_path = work_dir / "train.jsonl", work_dir / "eval.jsonl"
    if train_path.is_file() and eval_path.is_file():
        print(f"data: reusing {train_path} and {eval_path}")
        return {}
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
    train_files, heldout_files = corpus.split_files()
    timings = {}
    for name, files, count, seed, path in (
        ("eval", heldout_files, num_eval, SEED + 1, eval_path),
        ("train", train_files, num_train, SEED, train_path),
    ):
        start = time.time()
        prompts = sample_windows(files, tokenizer, count, seed)
        records = generate_continuations(target, tokenizer, prompts, CONTINUATION_TOKENS, GENERATION_BATCH)
        # Written under a temporary name first: an interrupted run must not leave a truncated file to reuse.
        save_sequences(records, path.with_suffix(".partial.jsonl"))
        path.with_suffix(".partial.jsonl").rename(path)
        generated = sum(len(r["input_ids"]) - r["prompt_length"] for r in records)
        timings[f"generate_{name}_s"] = round(time.time() - start, 1)
        timings[f"{name}_sequences"] = len(records)
        timings[f"{name}_tokens"] = sum(len(r["input_ids"]) for r in records)
        timings[f"{name}_generated_tokens"] = generated
        print(f"data: {name}: {len(records)} sequences, {generated} generated tokens, {timings[f'generate_{name}_s']}s")
    return timings


def fit_command(kind: str, work_dir: Path, target_dir: Path, steps: int, output_dir: Path) -> list[str]:
    """The `fit` command line of one head; the two heads differ only in the mask flag and their folders."""
    return [
        sys.executable, "-m", "jetspec_hf.training", "fit", "--target", str(target_dir),
        "--train-data", str(work_dir / "train.jsonl"), "--eval-data", str(work_dir / "eval.jsonl"),
        "--cache-features", str(work_dir / "cache"), *HEAD_ARGS, *TRAIN_ARGS,
        "--causal" if kind == "jetspec" else "--bidirectional",
        "--max-steps", str(steps), "--eval-steps", str(max(1, steps // 4)), "--save-steps", str(max(1, steps // 4)),
        "--save-total-limit", "1", "--checkpoint-dir", str(work_dir / f"checkpoints-{kind}"),
        "--output-dir", str(output_dir), "--no-progress",
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--target", type=Path, default=TARGET_DIR)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--num-train-prompts", type=int, default=NUM_TRAIN_PROMPTS)
    parser.add_argument("--num-eval-prompts", type=int, default=NUM_EVAL_PROMPTS)
    parser.add_argument("--heads", nargs="+", default=["jetspec", "dflash"], choices=list(HEAD_DIRS))
    parser.add_argument("--out-root", type=Path, help="write the heads under this folder instead of examples/models")
    parser.add_argument("--sequential", action="store_true", help="train the heads one after the other")
    parser.add_argument("--resume", action="store_true", help="continue each head from its latest checkpoint")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    seed_everything(SEED)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    timings_path = args.work_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings.update(make_data(args.work_dir, args.target, args.num_train_prompts, args.num_eval_prompts))
    timings_path.write_text(json.dumps(timings, indent=2))

    out_dirs = {kind: (args.out_root / HEAD_DIRS[kind].name if args.out_root else HEAD_DIRS[kind])
                for kind in args.heads}
    # The feature cache is built once, by the same code path as the fits (same filtering and fingerprint).
    start = time.time()
    cache_command = fit_command(args.heads[0], args.work_dir, args.target, args.steps,
                                args.work_dir / "cache-only") + ["--cache-only"]
    subprocess.run(cache_command, check=True)
    timings["feature_cache_s"] = round(time.time() - start, 1)
    timings_path.write_text(json.dumps(timings, indent=2))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    running = {}
    for kind in args.heads:
        if out_dirs[kind].exists() and not args.resume:
            shutil.rmtree(out_dirs[kind])  # a clean folder: no stale file from an earlier layout
        command = fit_command(kind, args.work_dir, args.target, args.steps, out_dirs[kind])
        # A fresh run clears the earlier run's checkpoints (kept in the work dir), which fit refuses to mix in.
        command += ["--resume", "latest"] if args.resume else ["--overwrite-output-dir"]
        log = open(args.work_dir / f"train-{kind}.log", "w")
        print(f"training {kind} -> {out_dirs[kind]} (log: {log.name})")
        running[kind] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.time())
        if args.sequential:
            running[kind][0].wait()
    # Poll rather than wait in order, so that each head's wall time ends when ITS process ends.
    finished = {}
    while len(finished) < len(running):
        for kind, (process, log, started) in running.items():
            if kind not in finished and process.poll() is not None:
                finished[kind] = time.time()
                log.close()
                timings[f"train_{kind}_s"] = round(finished[kind] - started, 1)
        time.sleep(2)
    for kind, (process, log, _) in running.items():
        if process.returncode != 0:
            raise SystemExit(f"training {kind} failed (exit {process.returncode}); see {log.name}")
        results = json.loads((out_dirs[kind] / "eval_results.json").read_text())
        timings[f"{kind}_final_eval"] = results["final_eval"]
        timings[f"{kind}_train_loop_s"] = results["train_seconds"]
    timings_path.write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings, indent=2))


if __name__ == "__main__":
    main()
