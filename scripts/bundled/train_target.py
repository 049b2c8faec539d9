"""Train the bundled Qwen3 target model from scratch on the stdlib train split.

    python scripts/bundled/train_tokenizer.py      # first, once
    python scripts/bundled/train_target.py [--steps N] [--out jetspec_hf/bundled/models/target]

One CPU thread, fp32, fixed seed: the run is reproducible on the same torch build and
leaves the machine's other core free. The weights are saved in bfloat16 to keep the repo
small; consumers load them with `dtype=torch.float32`.

The training loop here (`train_lm`) is shared with train_draft_lm.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "jetspec_hf" / "bundled" / "models" / "tokenizer"
DEFAULT_OUT = REPO / "jetspec_hf" / "bundled" / "models" / "target"

SEED = 0
SEQ_LEN = 256
BATCH_SIZE = 16
LR = 1e-3
# Fixed so that the run is reproducible and its cost known. A 30-step trial measured
# ~2.4 s/step on one thread of the 2-core AMD EPYC build machine (the model is ~5.8M
# parameters, ~140 GFLOP a step), so 600 steps is ~24 minutes of training plus ~1.5 for
# tokenizing, the held-out pass and saving. It is ~0.9 epoch of the 2.7M-token train split.
# (The committed model's run took 28 minutes at 2.72 s/step: other jobs shared the VM.)
STEPS = 600

TARGET_CONFIG = dict(
    hidden_size=256,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=768,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rope_theta=10000.0,
)


def seed_everything(seed: int) -> None:
    """Seed every RNG the run touches (torch for init and dropout-free training order,
    numpy for the batch permutation, random for anything else a library might use)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tokenize_split(tokenizer, files) -> torch.Tensor:
    """All files' tokens, each file followed by EOS, as one flat int64 tensor."""
    # The backend Tokenizer batch-encodes without transformers' per-call overhead and
    # without its "longer than model_max_length" warning (files are cut into chunks below).
    backend = tokenizer.backend_tokenizer
    encodings = backend.encode_batch([corpus.read_text(path) for _, path in files], add_special_tokens=False)
    eos = tokenizer.eos_token_id
    flat: list[int] = []
    for enc in encodings:
        flat.extend(enc.ids)
        # EOS between files teaches the model where a file ends, and that what follows is
        # unrelated: the model can learn to ignore context across the boundary.
        flat.append(eos)
    return torch.tensor(flat, dtype=torch.long)


def chunk(tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Non-overlapping [n, seq_len] rows; the tail shorter than seq_len is dropped."""
    n = tokens.numel() // seq_len
    return tokens[: n * seq_len].view(n, seq_len)


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warmup over the first 5% of steps (at least 1), then cosine decay to 10% of
    peak. The floor keeps the last steps learning instead of freezing."""
    warmup = max(1, int(0.05 * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, rows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats/token) over all rows."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, rows.size(0), batch_size):
        batch = rows[i : i + batch_size]
        # labels=input_ids: the model shifts internally, so each row gives seq_len-1 targets.
        loss = model(input_ids=batch, labels=batch).loss
        n = batch.size(0) * (batch.size(1) - 1)
        total += loss.item() * n
        count += n
    model.train()
    return total / count


def build_optimizer(model, lr: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only; norms' gains are not decayed (decaying
    them toward 0 fights the normalisation they exist to scale)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def train_lm(model_config: dict, out: Path, steps: int, *, lr: float = LR, batch_size: int = BATCH_SIZE,
             seq_len: int = SEQ_LEN, seed: int = SEED, log_every: int = 50, name: str = "model") -> dict:
    """Train a Qwen3ForCausalLM with `model_config` from scratch and save it (bf16) to `out`.
    Returns a summary dict (also written next to the weights)."""
    torch.set_num_threads(1)  # one core for us, one left for everyone else on the machine
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # same, for the tokenizer's pool
    seed_everything(seed)
    t_start = time.time()

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    train_files, heldout_files = corpus.split_files()
    train_rows = chunk(tokenize_split(tokenizer, train_files), seq_len)
    heldout_rows = chunk(tokenize_split(tokenizer, heldout_files), seq_len)
    print(f"[{name}] train: {len(train_files)} files, {train_rows.numel():,} tokens in {train_rows.size(0)} rows; "
          f"held-out: {len(heldout_files)} files, {heldout_rows.size(0)} rows")

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        # Qwen3 has no BOS in practice; bos = eos keeps generate() from complaining.
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        **model_config,
    )
    model = Qwen3ForCausalLM(config)
    model.set_attn_implementation("sdpa")
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[{name}] {n_params:,} parameters, {steps} steps of {batch_size}x{seq_len} tokens "
          f"({steps * batch_size / train_rows.size(0):.2f} epochs)")

    optimizer = build_optimizer(model, lr)
    # Rows are visited in a fresh seeded permutation each epoch: every row once per epoch,
    # in an order that does not follow file order (files of one package are similar).
    rng = np.random.default_rng(seed)
    order: list[int] = []

    losses: list[float] = []
    t_train = time.time()
    bar = tqdm(range(steps), desc=name, mininterval=5.0, file=sys.stdout)
    for step in bar:
        if len(order) < batch_size:
            order.extend(rng.permutation(train_rows.size(0)).tolist())
        idx, order = order[:batch_size], order[batch_size:]
        batch = train_rows[idx]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Clipping guards the early high-lr steps of a from-scratch run against spikes.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            bar.set_postfix(loss=f"{recent:.3f}")
            # A plain line as well: tqdm's bar is overwritten in place and lost in log files.
            tqdm.write(f"[{name}] step {step + 1}/{steps} loss {recent:.4f} lr {lr_at(step, steps, lr):.2e} "
                       f"{(time.time() - t_train) / (step + 1):.3f}s/step")
    bar.close()
    train_seconds = time.time() - t_train

    final_train = sum(losses[-log_every:]) / len(losses[-log_every:])
    heldout_loss = evaluate(model, heldout_rows, batch_size)
    print(f"[{name}] final train loss (last {log_every} steps) {final_train:.4f}; "
          f"held-out loss {heldout_loss:.4f} (ppl {math.exp(heldout_loss):.2f})")

    save(model, tokenizer, out)
    summary = {
        "name": name,
        "parameters": n_params,
        "steps": steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "seed": seed,
        "train_tokens": int(train_rows.numel()),
        "epochs": steps * batch_size / train_rows.size(0),
        "final_train_loss": round(final_train, 4),
        "heldout_loss": round(heldout_loss, 4),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "torch": torch.__version__,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[{name}] saved to {out}; {summary['total_seconds']}s in all")
    return summary


def save(model, tokenizer, out: Path) -> None:
    """Weights in bf16 plus config, generation config and the tokenizer, all in `out`."""
    if out.exists():
        # A stale file from an earlier layout (e.g. a sharded checkpoint) would be loaded
        # alongside the new one; start the folder clean.
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def run(model_config: dict, name: str, description: str, default_out: Path, default_steps: int, argv=None) -> None:
    """The command line of a bundled LM's training script (`--steps`, `--out`, `--lr`), then `train_lm`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=default_steps)
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--lr", type=float, default=LR, help="peak learning rate")
    args = parser.parse_args(argv)
    train_lm(model_config, args.out, args.steps, lr=args.lr, name=name)


def main(argv=None) -> None:
    run(TARGET_CONFIG, "target", __doc__.splitlines()[0], DEFAULT_OUT, STEPS, argv)


if __name__ == "__main__":
    main()
