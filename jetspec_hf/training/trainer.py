"""The training loop: AdamW with warmup + cosine, gradient clipping, periodic evaluation, checkpoints and resume.

It runs under `accelerate.Accelerator`, so the same code trains on one CPU process, one GPU, or several processes
started by `accelerate launch` (the head is wrapped for data parallelism; the frozen target is only moved to the
device). Batches and anchors are pure functions of (seed, step, process), so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from ..configuration_jetspec import JetSpecConfig
from ..modeling_jetspec import JetSpecDraftModel
from .batches import Batch, BatchSchedule, collate, shard_indices
from .data import fingerprint_sequences
from .features import FeatureCache, TargetFeatureExtractor, TargetFeatures, build_feature_cache
from .objective import ObjectiveSettings, block_objective, sample_anchors, summarize_agreement

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FOLDER = "state"


@dataclass
class HeadTrainingArguments:
    """Settings of one head training run (the CLI's options, one field each)."""

    output_dir: str
    max_steps: int = 1000
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    anchors_per_seq: int = 16
    ce_weight: float = 1.0
    kl_weight: float = 0.0
    kl_temperature: float = 1.0
    depth_gamma: float | None = None
    max_seq_len: int | None = None
    seed: int = 0
    log_steps: int = 10
    eval_steps: int = 0
    eval_batch_size: int | None = None
    save_steps: int = 0
    save_total_limit: int | None = 2
    checkpoint_dir: str | None = None
    resume: str | None = None
    cache_features: str | None = None
    cache_dtype: str = "float32"
    mixed_precision: str = "no"
    cpu: bool = False
    save_dtype: str = "float32"
    show_progress: bool = True

    def objective_settings(self, head_config: JetSpecConfig) -> ObjectiveSettings:
        """The loss settings for a head with `head_config`."""
        return ObjectiveSettings.from_head_config(
            head_config,
            anchors_per_seq=self.anchors_per_seq,
            ce_weight=self.ce_weight,
            kl_weight=self.kl_weight,
            kl_temperature=self.kl_temperature,
            depth_gamma=self.depth_gamma,
        )


class TrainerState:
    """Counters saved with every checkpoint (registered with the accelerator, so `load_state` restores them)."""

    def __init__(self):
        self.step = 0
        self.best_eval_accept = None

    def state_dict(self) -> dict:
        return {"step": self.step, "best_eval_accept": self.best_eval_accept}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.best_eval_accept = state.get("best_eval_accept")


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup over `warmup` steps, then cosine decay from 1 to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def usable_records(records: list[dict], block_size: int, max_seq_len: int | None) -> list[dict]:
    """Records truncated to `max_seq_len` that still hold at least one full block after their loss start."""
    kept = []
    for record in records:
        ids = record["input_ids"][:max_seq_len] if max_seq_len else record["input_ids"]
        if len(ids) - block_size >= max(1, record["prompt_length"]):
            kept.append({"input_ids": ids, "prompt_length": record["prompt_length"]})
            if record.get("labels") is not None:
                kept[-1]["labels"] = record["labels"][: len(ids)]
    return kept


def find_latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The `checkpoint-<step>` folder with the highest step that holds a complete training state."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    candidates = []
    for path in checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if suffix.isdigit() and (path / STATE_FOLDER).is_dir():
            candidates.append((int(suffix), path))
    return max(candidates)[1] if candidates else None


class FeatureSource:
    """Tapped target features for a batch: computed by the target on the fly, or read from a disk cache."""

    def __init__(self, extractor: TargetFeatureExtractor, cache: FeatureCache | None, device):
        self.extractor = extractor
        self.cache = cache
        self.device = device

    def __call__(self, batch: Batch) -> TargetFeatures:
        if self.cache is not None:
            return self.cache.batch(batch.indices, batch.input_ids.shape[1], self.device)
        return self.extractor(batch.input_ids)


class HeadTrainer:
    """Trains a `JetSpecDraftModel` on token sequences against a frozen target.

    Args:
        target: the frozen Qwen3 causal LM (its embeddings and lm_head are borrowed, its layers tapped).
        tokenizer: the target's tokenizer (saved next to the head; its pad id pads batches).
        head_config: the new head's config (see `head_config_from_target`).
        train_records / eval_records: token sequences `{"input_ids", "prompt_length"}` (see `data.load_sequences`).
        args: the run's `HeadTrainingArguments`.
    """

    def __init__(self, target: nn.Module, tokenizer, head_config: JetSpecConfig, train_records: list[dict],
                 eval_records: list[dict] | None, args: HeadTrainingArguments):
        self.args = args
        self.tokenizer = tokenizer
        self.head_config = head_config
        # On a machine with no accelerator, say so explicitly: accelerate then runs processes started by
        # `accelerate launch --multi_gpu` / torchrun as a gloo process group instead of as independent runs.
        use_cpu = args.cpu or not _accelerator_available()
        self.accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=use_cpu)
        self.is_main = self.accelerator.is_main_process
        block = head_config.block_size
        self.train_records = usable_records(train_records, block, args.max_seq_len)
        self.eval_records = usable_records(eval_records or [], block, args.max_seq_len)
        if not self.train_records:
            raise ValueError(
                f"No training sequence is long enough: each needs at least block_size ({block}) tokens after its "
                "prompt. Generate longer continuations or lower --block-size."
            )
        self.log(f"{len(self.train_records)}/{len(train_records)} training sequences usable"
                 + (f", {len(self.eval_records)}/{len(eval_records)} eval" if eval_records else ""))

        device = self.accelerator.device
        self.target = target.to(device).eval().requires_grad_(False)
        self.embed_tokens = self.target.get_input_embeddings()
        self.lm_head = self.target.get_output_embeddings()
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.settings = args.objective_settings(head_config)
        self.extractor = TargetFeatureExtractor(
            self.target, head_config.target_layer_ids, with_final_hidden=self.settings.needs_target_logits
        )
        self.train_features = FeatureSource(self.extractor, self._feature_cache("train", self.train_records), device)
        self.eval_features = FeatureSource(self.extractor, self._feature_cache("eval", self.eval_records), device)

        set_seed(args.seed)
        head = JetSpecDraftModel(head_config)
        head.train()
        self.num_parameters = sum(p.numel() for p in head.parameters())
        optimizer = torch.optim.AdamW(
            head.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.weight_decay,
        )
        warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * args.max_steps)
        # Not passed through `prepare`: accelerate's scheduler wrapper steps once per process, which would shorten
        # the schedule under several processes. Registered instead, so that checkpoints still hold it.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, args.max_steps, warmup, args.min_lr_ratio)
        )
        self.head, self.optimizer = self.accelerator.prepare(head, optimizer)
        self.state = TrainerState()
        self.accelerator.register_for_checkpointing(self.scheduler, self.state)

        self.schedule = BatchSchedule(
            len(self.train_records), args.per_device_batch_size, self.accelerator.num_processes,
            self.accelerator.process_index, args.seed,
        )
        self.checkpoint_dir = Path(args.checkpoint_dir or args.output_dir)
        self.history: list[dict] = []

    # ------------------------------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """Print on the main process only, without breaking the progress bar."""
        if self.is_main:
            tqdm.write(message)

    def _log_record(self, record: dict) -> None:
        self.history.append(record)
        if self.is_main:
            output_dir = Path(self.args.output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            with open(output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def _feature_cache(self, split: str, records: list[dict]) -> FeatureCache | None:
        """Open (building it first on the main process if absent) the feature cache of one split."""
        if self.args.cache_features is None or not records:
            return None
        cache_dir = Path(self.args.cache_features) / split
        fingerprint = fingerprint_sequences(records)
        if self.is_main and not FeatureCache.exists(cache_dir):
            self.log(f"building the {split} feature cache in {cache_dir}")
            build_feature_cache(
                self.extractor, [r["input_ids"] for r in records], cache_dir, fingerprint,
                batch_size=self.args.eval_batch_size or self.args.per_device_batch_size,
                dtype=DTYPES[self.args.cache_dtype], pad_token_id=self.pad_token_id,
                device=self.accelerator.device, show_progress=self.args.show_progress,
            )
        # The other processes wait for the main one to finish writing.
        self.accelerator.wait_for_everyone()
        cache = FeatureCache(cache_dir)
        cache.check(fingerprint, self.head_config.target_layer_ids, self.settings.needs_target_logits)
        return cache

    def _anchor_generator(self, micro_step: int) -> torch.Generator:
        seed = (self.args.seed * 1_000_003 + micro_step) * 64 + self.accelerator.process_index
        return torch.Generator().manual_seed(seed % (2**63))

    def _objective(self, head: nn.Module, batch: Batch, features: TargetFeatures, generator=None, anchors=None):
        return block_objective(
            head, self.embed_tokens, self.lm_head, batch.input_ids, batch.lengths, batch.loss_starts,
            features.features, self.settings, features.final_hidden, generator=generator, anchors=anchors,
            label_ids=batch.labels,
        )

    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Per-depth top-1 agreement with the labels (the target's own greedy tokens for self-distilled data), the
        mean accepted length of a chain drafted from each block, and the loss, over the eval split.

        Anchors are drawn per sequence from a seed fixed by the sequence index, so the numbers compare across
        evaluations and process counts.
        """
        if not self.eval_records:
            return None
        # The unwrapped head: a data-parallel wrapper would run collectives in every forward, and processes may
        # hold different numbers of eval batches.
        head = self.accelerator.unwrap_model(self.head)
        head.eval()
        device = self.accelerator.device
        block = self.settings.block_size
        totals = torch.zeros(2 * (block - 1) + 3, device=device)  # correct[d], count[d], accepted, blocks, loss*blocks
        mine = shard_indices(len(self.eval_records), self.accelerator.num_processes, self.accelerator.process_index)
        batch_size = self.args.eval_batch_size or self.args.per_device_batch_size
        for start in range(0, len(mine), batch_size):
            indices = mine[start : start + batch_size]
            batch = collate(self.eval_records, indices, self.pad_token_id).to(device)
            anchors = self._fixed_anchors(batch)
            with self.accelerator.autocast():
                out = self._objective(head, batch, self.eval_features(batch), anchors=anchors)
            totals[: block - 1] += out.correct_per_depth
            totals[block - 1 : 2 * (block - 1)] += out.count_per_depth
            totals[-3] += out.accepted_sum
            totals[-2] += out.num_blocks
            totals[-1] += out.loss.float() * out.num_blocks
        totals = self.accelerator.reduce(totals, reduction="sum")
        head.train()
        blocks = totals[-2].clamp(min=1)
        agreement = summarize_agreement(totals[: block - 1].cpu(), totals[block - 1 : 2 * (block - 1)].cpu())
        return {
            "eval_loss": float(totals[-1] / blocks),
            "eval_top1_per_depth": [round(a, 4) for a in agreement],
            "eval_mean_accepted": float(totals[-3] / blocks),
            "eval_blocks": int(totals[-2]),
        }

    def _fixed_anchors(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for row, index in enumerate(batch.indices):
            generator = torch.Generator().manual_seed(self.args.seed + 7919 * (index + 1))
            rows.append(sample_anchors(batch.lengths[row : row + 1].cpu(), batch.loss_starts[row : row + 1].cpu(),
                                       self.settings.block_size, self.settings.anchors_per_seq, generator))
        slots = max(a.shape[1] for a, _ in rows)
        anchors = torch.zeros(len(rows), slots, dtype=torch.long)
        valid = torch.zeros(len(rows), slots, dtype=torch.bool)
        for row, (a, v) in enumerate(rows):
            anchors[row, : a.shape[1]], valid[row, : v.shape[1]] = a[0], v[0]
        return anchors, valid

    # ------------------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """`checkpoint-<step>/`: the head as `save_pretrained` writes it, plus `state/` (optimizer, scheduler, RNG,
        step) for `--resume`. Older checkpoints beyond `save_total_limit` are removed."""
        path = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.state.step}"
        if self.is_main:
            self.accelerator.unwrap_model(self.head).save_pretrained(path)
        self.accelerator.save_state(str(path / STATE_FOLDER))
        self.accelerator.wait_for_everyone()
        if self.is_main and self.args.save_total_limit:
            found = sorted(
                (int(p.name[len(CHECKPOINT_PREFIX) :]), p)
                for p in self.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*")
                if p.name[len(CHECKPOINT_PREFIX) :].isdigit()
            )
            for _, old in found[: -self.args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self.log(f"saved {path}")
        return path

    def _resume(self) -> None:
        resume = self.args.resume
        if not resume:
            return
        path = find_latest_checkpoint(self.checkpoint_dir) if resume == "latest" else Path(resume)
        if path is None:
            self.log(f"--resume latest: no checkpoint in {self.checkpoint_dir}, starting from scratch")
            return
        if (path / STATE_FOLDER).is_dir():
            path = path / STATE_FOLDER
        if not path.is_dir():
            raise FileNotFoundError(f"--resume {resume}: {path} is not a checkpoint folder.")
        self.accelerator.load_state(str(path))
        self.log(f"resumed from {path} at step {self.state.step}")

    def save_final(self) -> Path:
        """Write the head (in `save_dtype`), the target's tokenizer and `training_args.json` to `output_dir`."""
        output_dir = Path(self.args.output_dir)
        if self.is_main:
            # A cast copy, so that the config records the saved dtype and the trained fp32 head stays as it is.
            head = copy.deepcopy(self.accelerator.unwrap_model(self.head)).to(DTYPES[self.args.save_dtype])
            head.save_pretrained(output_dir)
            self.tokenizer.save_pretrained(output_dir)
            record = {
                "args": asdict(self.args),
                "head_config": {
                    "num_hidden_layers": head.config.num_hidden_layers,
                    "block_size": head.config.block_size,
                    "dflash_config": head.config.dflash_config,
                },
                "num_parameters": self.num_parameters,
                "num_train_sequences": len(self.train_records),
                "num_eval_sequences": len(self.eval_records),
                "num_processes": self.accelerator.num_processes,
            }
            (output_dir / "training_args.json").write_text(json.dumps(record, indent=2, default=str))
        self.accelerator.wait_for_everyone()
        return output_dir

    def train(self) -> dict:
        """Run to `max_steps` (from a checkpoint when `resume` is set), save the final head, return a summary."""
        args = self.args
        self._resume()
        accumulate = args.gradient_accumulation_steps
        self.log(
            f"head: {self.num_parameters:,} parameters, causal={self.head_config.causal_head}, "
            f"block={self.head_config.block_size}, layers tapped {self.head_config.target_layer_ids}; "
            f"{args.max_steps} steps x {args.per_device_batch_size * accumulate * self.accelerator.num_processes} "
            f"sequences ({self.schedule.epoch_of(args.max_steps * accumulate):.2f} epochs)"
        )
        start_time = time.time()
        start_step = self.state.step
        progress = tqdm(total=args.max_steps, initial=start_step, desc="training", mininterval=5.0,
                        disable=not (self.is_main and args.show_progress))
        running = torch.zeros(3, device=self.accelerator.device)  # loss sum, top-1 (depth 1) sum, count
        while self.state.step < args.max_steps:
            for micro in range(accumulate):
                micro_step = self.state.step * accumulate + micro
                batch = collate(self.train_records, self.schedule.indices(micro_step), self.pad_token_id)
                batch = batch.to(self.accelerator.device)
                features = self.train_features(batch)
                # Gradients are all-reduced only on the last micro-batch of a step.
                sync = nullcontext() if micro == accumulate - 1 else self.accelerator.no_sync(self.head)
                with sync, self.accelerator.autocast():
                    out = self._objective(self.head, batch, features, generator=self._anchor_generator(micro_step))
                    self.accelerator.backward(out.loss / accumulate)
                running += torch.stack([out.loss.detach().float(), out.correct_per_depth[0] /
                                        out.count_per_depth[0].clamp(min=1), torch.ones((), device=running.device)])
            grad_norm = self.accelerator.clip_grad_norm_(self.head.parameters(), args.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            progress.update(1)

            step = self.state.step
            if args.log_steps and (step % args.log_steps == 0 or step == args.max_steps):
                totals = self.accelerator.reduce(running, reduction="sum")
                record = {
                    "step": step,
                    "loss": float(totals[0] / totals[2].clamp(min=1)),
                    "top1_depth1": float(totals[1] / totals[2].clamp(min=1)),
                    "lr": self.scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "epoch": round(self.schedule.epoch_of(step * accumulate), 3),
                    "elapsed_s": round(time.time() - start_time, 1),
                }
                self._log_record(record)
                self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
                running.zero_()
            if args.eval_steps and step % args.eval_steps == 0 and step != args.max_steps:
                self._log_eval(step)
            if args.save_steps and step % args.save_steps == 0:
                self.save_checkpoint()
        progress.close()
        train_seconds = time.time() - start_time
        final_eval = self._log_eval(self.state.step)
        self.save_final()
        summary = {
            "steps": self.state.step,
            "resumed_from_step": start_step,
            "train_seconds": round(train_seconds, 1),
            "final_eval": final_eval,
        }
        if self.is_main:
            (Path(args.output_dir) / "eval_results.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _log_eval(self, step: int) -> dict | None:
        result = self.evaluate()
        if result is not None:
            self._log_record({"step": step, **result})
            depths = " ".join(f"{a:.3f}" for a in result["eval_top1_per_depth"])
            self.log(f"eval step {step}: loss {result['eval_loss']:.4f}, mean accepted "
                     f"{result['eval_mean_accepted']:.3f}, top-1 per depth [{depths}]")
        return result


__all__ = ["DTYPES", "HeadTrainer", "HeadTrainingArguments", "find_latest_checkpoint", "usable_records",
           "warmup_cosine"]
