"""The recipe under `accelerate launch` with two CPU processes: a gloo process group, data-parallel steps, one
saved head and checkpoint holding both processes' RNG states."""

import json
import os
import shutil
import subprocess
import sys

from jetspec_hf import JetSpecDraftModel


def accelerate_command() -> list[str]:
    executable = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    return [executable] if executable else [sys.executable, "-m", "accelerate.commands.launch"]


def test_two_process_launch_trains_and_saves(tmp_path, target_dir, repetitive_data):
    train, eval_data = repetitive_data
    output = tmp_path / "head"
    launcher = accelerate_command()
    if launcher[-1] != "accelerate.commands.launch":
        launcher.append("launch")
    # With no GPU, `--multi_gpu` only picks the torchrun launcher; the recipe then forms a CPU (gloo) group.
    # (`--cpu` would need mpirun for more than one process.)
    command = launcher + [
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "29517",
        "-m", "jetspec_hf.training", "fit", "--target", str(target_dir), "--train-data", train,
        "--eval-data", eval_data, "--num-layers", "1", "--intermediate-size", "64", "--block-size", "5",
        "--max-steps", "4", "--batch-size", "2", "--save-steps", "4", "--log-steps", "2", "--cpu",
        "--output-dir", str(output), "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    record = json.loads((output / "training_args.json").read_text())
    assert record["num_processes"] == 2
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [2, 4]
    # Each step took 2 sequences from each of the 2 processes: 4 steps x 4 of 48 sequences.
    assert log[1]["epoch"] == round(4 * 4 / 48, 3)
    state = output / "checkpoint-4" / "state"
    assert (state / "rng-0.safetensors").is_file() and (state / "rng-1.safetensors").is_file()
    assert not [path for path in state.iterdir() if path.suffix in (".pkl", ".bin")]  # nothing pickled
    head, info = JetSpecDraftModel.from_pretrained(output, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert head.config.block_size == 5
