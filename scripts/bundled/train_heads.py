"""Train the two bundled draft heads on the bundled target: JetSpec (causal) and DFlash (bidirectional).

    python scripts/bundled/train_heads.py [--work-dir DIR] [--steps N] [--sequential]

1. Data, two kinds, all from train-split stdlib files (eval: held-out files), in one training set:
   - self-distillation: token windows (32-192 tokens) continued greedily by the target for CONTINUATION_TOKENS
     tokens; the continuation is trained on. This is what decoding looks like once the target runs on its own
     (it loops, and every depth is easy there).
   - real text: CORPUS_WINDOW_TOKENS-token windows of the files themselves, labelled with the target's greedy
     token at every position (`target_argmax_labels`), trained on after their first CORPUS_CONTEXT_TOKENS. This is
     what decoding looks like right after a prompt, where depth 1 is hard. A block there learns depth d only
     while the text's tokens at depths < d are the target's own choices (see `jetspec_hf.training.objective`).
   The eval set is self-distillation on held-out files only, as before, so its numbers compare across runs.
2. The target's tapped features (and final hidden states, for the KL term) are cached once for both heads.
3. Both heads train with IDENTICAL settings (data, seed, steps, schedule, anchors), except the block mask, as two
   processes in parallel (one CPU thread each), or one after the other with --sequential (same result).

Outputs: jetspec_hf/bundled/models/jetspec_head/ and jetspec_hf/bundled/models/dflash_head/ (bf16 weights, config,
training_args.json with paths relative to the repository or to the work dir, eval_results.json,
log.jsonl). Data, cache, checkpoints, logs and timings.json go to --work-dir (outside the repo by default: they
are large and reproducible). Decode-time quality: scripts/bundled/eval_heads.py.
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

from jetspec_hf.training.run_folder import TRAINING_ARGS_FILE, portable_training_args

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TARGET_DIR = REPO / "jetspec_hf" / "bundled" / "models" / "target"
HEAD_DIRS = {"jetspec": REPO / "jetspec_hf" / "bundled" / "models" / "jetspec_head",
             "dflash": REPO / "jetspec_hf" / "bundled" / "models" / "dflash_head"}
DEFAULT_WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jetspec_hf" / "bundled_heads"

SEED = 0
# Self-distillation data: sized so that generation takes 7-10 minutes on one CPU thread (measured: 426-556 s for the
# 2816 train prompts, 22-27 s for the 192 eval ones, in batches of 64 x 160 new tokens).
NUM_TRAIN_PROMPTS = 2816
NUM_EVAL_PROMPTS = 192
PROMPT_TOKENS = (32, 192)  # window length drawn uniformly: the head sees contexts of many lengths
CONTINUATION_TOKENS = 160
GENERATION_BATCH = 64
# Real-text data: as many windows as self-distilled sequences, so that about half of every batch is real text
# (~0.7 M tokens, a quarter of the train split). 256 tokens is the target's own training row length; anchors
# start after 32 tokens of context, the shortest self-distillation prompt.
NUM_CORPUS_WINDOWS = 2816
CORPUS_WINDOW_TOKENS = 256
CORPUS_CONTEXT_TOKENS = 32
LABEL_BATCH = 16

# Head: the target's width (hidden 256, 4 heads of 64, 2 kv heads), 2 layers. The MLP is 512 wide rather than the
# target's 768 so that the bf16 weights stay under 3 MB (768 would make 3.5 MB).
HEAD_ARGS = [
    "--num-layers", "2", "--num-heads", "4", "--num-kv-heads", "2", "--head-dim", "64",
    "--intermediate-size", "512", "--block-size", "16", "--target-layer-ids", "1", "3", "5",
]
# Objective and optimisation, shared by both heads. One step (8 sequences x 16 blocks of 16) took 0.6 s on one CPU
# thread (another job on the second core), up to 1.3 s when jobs compete harder: 4000 steps (~5.7 epochs of each
# half of the data, fresh random anchors every time) is 40-90 minutes per head. lr 1e-3 rather than the recipe's
# 3e-4 default: a from-scratch run this short gets further with it, and the warmup keeps the first updates stable.
STEPS = 4000
TRAIN_ARGS = [
    "--anchors-per-seq", "16", "--ce-weight", "1.0", "--kl-weight", "1.0", "--kl-temperature", "1.0",
    "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "100", "--min-lr-ratio", "0.1",
    "--weight-decay", "0.0", "--max-grad-norm", "1.0", "--seed", str(SEED),
    "--eval-batch-size", "16", "--log-steps", "25", "--save-dtype", "bfloat16",
    "--cache-dtype", "bfloat16", "--threads", "1",
]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's RNGs (prompt sampling uses its own seeded `random.Random`)."""
    random.seed(seed)
    torch.manual_seed(seed)


def sample_windows(files, tokenizer, count: int, seed: int, lengths: tuple[int, int] = PROMPT_TOKENS
                   ) -> list[list[int]]:
    """`count` token windows from `files`, each of a random length in `lengths` at a random offset.

    Files are picked with probability proportional to their token count (so big modules are not under-sampled),
    and everything is drawn from one seeded generator: the same windows on every run.
    """
    rng = random.Random(seed)
    tokenized = []
    for _, path in files:
        ids = tokenizer(corpus.read_text(path), add_special_tokens=False)["input_ids"]
        if len(ids) >= lengths[0]:
            tokenized.append(ids)
    weights = [len(ids) for ids in tokenized]
    windows = []
    for ids in rng.choices(tokenized, weights=weights, k=count):
        length = min(len(ids), rng.randint(*lengths))
        start = rng.randint(0, len(ids) - length)
        windows.append(ids[start : start + length])
    return windows


def save_atomically(records, path: Path) -> None:
    """Write under a temporary name first: an interrupted run must not leave a truncated file to reuse."""
    from jetspec_hf.training.data import save_sequences

    save_sequences(records, path.with_suffix(".partial.jsonl"))
    path.with_suffix(".partial.jsonl").rename(path)


def make_data(work_dir: Path, target_dir: Path, num_train: int, num_eval: int, num_corpus: int) -> dict:
    """Generate the self-distillation sets and the labelled real-text set, and join the training parts in
    `train-mix.jsonl` (each part is skipped when already in `work_dir`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jetspec_hf.training.data import generate_continuations, load_sequences, target_argmax_labels

    paths = {name: work_dir / f"{name}.jsonl" for name in ("eval", "train", "corpus", "train-mix")}
    if all(path.is_file() for path in paths.values()):
        print(f"data: reusing {', '.join(str(path) for path in paths.values())}")
        return {}
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
    train_files, heldout_files = corpus.split_files()
    timings = {}
    for name, files, count, seed in (
        ("eval", heldout_files, num_eval, SEED + 1),
        ("train", train_files, num_train, SEED),
    ):
        if paths[name].is_file():
            continue
        start = time.time()
        prompts = sample_windows(files, tokenizer, count, seed)
        records = generate_continuations(target, tokenizer, prompts, CONTINUATION_TOKENS, GENERATION_BATCH)
        save_atomically(records, paths[name])
        generated = sum(len(r["input_ids"]) - r["prompt_length"] for r in records)
        timings[f"generate_{name}_s"] = round(time.time() - start, 1)
        timings[f"{name}_sequences"] = len(records)
        timings[f"{name}_tokens"] = sum(len(r["input_ids"]) for r in records)
        timings[f"{name}_generated_tokens"] = generated
        print(f"data: {name}: {len(records)} sequences, {generated} generated tokens, {timings[f'generate_{name}_s']}s")
    if not paths["corpus"].is_file():
        start = time.time()
        # Another seed than the self-distillation prompts': other windows of the same files.
        windows = sample_windows(train_files, tokenizer, num_corpus, SEED + 2,
                                 (CORPUS_WINDOW_TOKENS, CORPUS_WINDOW_TOKENS))
        records = [{"input_ids": ids, "prompt_length": CORPUS_CONTEXT_TOKENS} for ids in windows]
        records = target_argmax_labels(target, records, LABEL_BATCH)
        save_atomically(records, paths["corpus"])
        agree = sum(sum(a == b for a, b in zip(r["input_ids"][1:], r["labels"][1:])) for r in records)
        timings["label_corpus_s"] = round(time.time() - start, 1)
        timings["corpus_sequences"] = len(records)
        timings["corpus_tokens"] = sum(len(r["input_ids"]) for r in records)
        # How often the text itself is the target's greedy choice: how far real-text blocks get past depth 1.
        timings["corpus_target_top1"] = round(agree / sum(len(r["input_ids"]) - 1 for r in records), 4)
        print(f"data: corpus: {len(records)} windows, target top-1 on them {timings['corpus_target_top1']}, "
              f"{timings['label_corpus_s']}s")
    save_atomically(load_sequences(paths["train"]) + load_sequences(paths["corpus"]), paths["train-mix"])
    return timings


def fit_command(kind: str, work_dir: Path, target_dir: Path, steps: int, output_dir: Path) -> list[str]:
    """The `fit` command line of one head; the two heads differ only in the mask flag and their folders."""
    return [
        sys.executable, "-m", "jetspec_hf.training", "fit", "--target", str(target_dir),
        "--train-data", str(work_dir / "train-mix.jsonl"), "--eval-data", str(work_dir / "eval.jsonl"),
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
    parser.add_argument("--num-corpus-windows", type=int, default=NUM_CORPUS_WINDOWS)
    parser.add_argument("--data-only", action="store_true", help="make the data, then stop")
    parser.add_argument("--heads", nargs="+", default=["jetspec", "dflash"], choices=list(HEAD_DIRS))
    parser.add_argument("--out-root", type=Path, help="write the heads under this folder instead of jetspec_hf/bundled/models")
    parser.add_argument("--sequential", action="store_true", help="train the heads one after the other")
    parser.add_argument("--resume", action="store_true", help="continue each head from its latest checkpoint")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    seed_everything(SEED)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    timings_path = args.work_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings.update(make_data(args.work_dir, args.target, args.num_train_prompts, args.num_eval_prompts,
                             args.num_corpus_windows))
    timings_path.write_text(json.dumps(timings, indent=2))
    if args.data_only:
        return

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
    running, finished = {}, {}
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
            finished[kind] = time.time()
            log.close()
            timings[f"train_{kind}_s"] = round(finished[kind] - running[kind][2], 1)
    # Poll rather than wait in order, so that each head's wall time ends when ITS process ends.
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
        portable_training_args(out_dirs[kind] / TRAINING_ARGS_FILE, REPO, args.work_dir,
                               "python scripts/bundled/train_heads.py (train data: <work-dir>/train-mix.jsonl)")
        # The heads load without a tokenizer (they use the target's); the package ships the target's copy only.
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (out_dirs[kind] / name).unlink(missing_ok=True)
        results = json.loads((out_dirs[kind] / "eval_results.json").read_text())
        timings[f"{kind}_final_eval"] = results["final_eval"]
        timings[f"{kind}_train_loop_s"] = results["train_seconds"]
    timings_path.write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings, indent=2))


if __name__ == "__main__":
    main()
