"""The training loop: AdamW with warm-up + cosine decay, gradient clipping, periodic evaluation, checkpoints, resume.

It runs under `accelerate.Accelerator`, so the same code trains on one CPU process, one GPU, or several processes
started by `accelerate launch` (the head is wrapped for data parallelism; the frozen target is only moved to the
device). Batches and anchors are pure functions of (seed, step, process), so a resumed run continues exactly.

The pieces live beside it: settings in `arguments`, the schedule in `schedule`, checkpoints in `checkpoints`, the
run's folders and log in `run_folder`, held-out numbers in `evaluation`.
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch import nn

from ..configuration_jetspec import JetSpecConfig
from ..dtypes import torch_dtype
from ..log import get_logger, progress_bar
from ..modeling_jetspec import JetSpecDraftModel
from .arguments import HeadTrainingArguments
from .batches import Batch, BatchSchedule, collate, usable_records
from .checkpoints import (
    CHECKPOINT_PREFIX,
    STATE_FOLDER,
    TrainingProgress,
    WEIGHTS_FILE,
    find_latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    resume_state_folder,
    save_training_state,
)
from .data import fingerprint_sequences
from .evaluation import evaluate_head
from .feature_scaling import SAMPLE_SEQUENCES, ScaledFc, feature_scales
from .heads import draft_vocabulary, initialise_from_head, initialise_from_target
from .features import FeatureCache, FeatureSource, TargetFeatureExtractor, TargetFeatures, build_feature_cache
from .objective import block_objective
from .run_folder import (
    EVAL_RESULTS_FILE,
    TRAINING_ARGS_FILE,
    TrainingLog,
    check_run_folders,
    clear_earlier_run,
)
from .schedule import warmup_cosine_schedule, warmup_steps_of

logger = get_logger(__name__)


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


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
        # Soft labels come from the cached top-k when the cache stores it, else from the final hidden states.
        self.teacher_top_k = args.teacher_top_k if args.cache_features else 0
        self.extractor = TargetFeatureExtractor(
            self.target, head_config.target_layer_ids,
            with_final_hidden=self.settings.needs_target_logits and not self.teacher_top_k,
        )
        self.train_features = FeatureSource(self.extractor, self._feature_cache("train", self.train_records), device)
        self.eval_features = FeatureSource(self.extractor, self._feature_cache("eval", self.eval_records), device)

        set_seed(args.seed)
        head = JetSpecDraftModel(head_config)
        if args.init_from_target and args.init_from_head:
            raise ValueError("--init-from-target and --init-from-head both say where the head starts: pass one.")
        if args.init_from_target:
            initialise_from_target(head, self.target)
        if args.init_from_head:
            # The saved head's draft vocabulary comes with its weights: its lm rows are the ones it learnt to rank.
            initialise_from_head(head, args.init_from_head)
            self.log(f"starting from the head in {args.init_from_head}")
        elif head_config.draft_vocab_size is not None:
            head.draft_vocab_ids.copy_(draft_vocabulary(self.train_records, head_config.draft_vocab_size,
                                                        head_config.vocab_size, self.train_features.cache))
            self.log(f"draft vocabulary: the {head_config.draft_vocab_size} most frequent labels")
        self.scaled_fc = None
        if args.scale_features:
            self.scaled_fc = ScaledFc(head.fc, self._feature_scales())
            if args.init_from_head:
                self.scaled_fc.load_folded(head.fc.weight.detach().clone())  # the saved fc has the scale folded in
        head.train()
        self.num_parameters = sum(p.numel() for p in head.parameters())
        optimizer = torch.optim.AdamW(
            head.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.weight_decay,
        )
        warmup = warmup_steps_of(args.warmup_steps, args.warmup_ratio, args.max_steps)
        # Not passed through `prepare`: accelerate's scheduler wrapper steps once per process, which would shorten
        # the schedule under several processes. Registered instead, so that checkpoints still hold it.
        self.scheduler = warmup_cosine_schedule(optimizer, warmup, args.max_steps, args.min_lr_ratio)
        self.head, self.optimizer = self.accelerator.prepare(head, optimizer)
        self.state = TrainingProgress()

        self.schedule = BatchSchedule(
            len(self.train_records), args.per_device_batch_size, self.accelerator.num_processes,
            self.accelerator.process_index, args.seed,
        )
        self.checkpoint_dir = Path(args.checkpoint_dir or args.output_dir)
        self.training_log = TrainingLog(args.output_dir)
        self.history: list[dict] = []

    # ------------------------------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """A progress note (INFO), from the main process only."""
        if self.is_main:
            logger.info(message)

    def _log_record(self, record: dict) -> None:
        self.history.append(record)
        if self.is_main:
            self.training_log.append(record)

    def _feature_cache(self, split: str, records: list[dict]) -> FeatureCache | None:
        """Open (building it first on the main process if absent) the feature cache of one split."""
        if self.args.cache_features is None or not records:
            return None
        cache_dir = Path(self.args.cache_features) / split
        fingerprint = fingerprint_sequences(records)
        if self.is_main and not FeatureCache.exists(cache_dir):
            self.log(f"building the {split} feature cache in {cache_dir}")
            # One target pass per token: the tapped layers (of the cache's superset), the greedy labels and,
            # when asked, the top-k soft labels together.
            builder = TargetFeatureExtractor(
                self.target, self.args.cache_layer_ids or self.head_config.target_layer_ids,
                with_final_hidden=self.extractor.with_final_hidden, with_labels=bool(self.teacher_top_k),
                teacher_top_k=self.teacher_top_k,
            )
            build_feature_cache(
                builder, [r["input_ids"] for r in records], cache_dir, fingerprint,
                batch_size=self.args.eval_batch_size or self.args.per_device_batch_size,
                shard_size=self.args.cache_shard_size, dtype=torch_dtype(self.args.cache_dtype),
                pad_token_id=self.pad_token_id, device=self.accelerator.device, show_progress=self.args.progress,
            )
        # The other processes wait for the main one to finish writing.
        self.accelerator.wait_for_everyone()
        cache = FeatureCache(cache_dir)
        cache.check(fingerprint, self.head_config.target_layer_ids, self.settings.needs_target_logits,
                    need_teacher=bool(self.teacher_top_k))
        cache.select_layers(self.head_config.target_layer_ids)
        return cache

    def _feature_scales(self) -> torch.Tensor:
        """`feature_scaling.feature_scales` of the first training sequences' tapped features (deterministic, so a
        resumed run computes the same scale)."""
        count = min(SAMPLE_SEQUENCES, len(self.train_records))
        cache = self.train_features.cache
        with torch.no_grad():
            if cache is not None:
                features = [cache.get(index).features for index in range(count)]
            else:
                features = [self.extractor(torch.tensor([self.train_records[index]["input_ids"]],
                                                        device=self.accelerator.device)).features[0].cpu()
                            for index in range(count)]
        return feature_scales(features, self.head_config.hidden_size)

    def _anchor_generator(self, micro_step: int) -> torch.Generator:
        seed = (self.args.seed * 1_000_003 + micro_step) * 64 + self.accelerator.process_index
        return torch.Generator().manual_seed(seed % (2**63))

    def _objective(self, head: nn.Module, batch: Batch, features: TargetFeatures, generator=None, anchors=None):
        return block_objective(
            head, self.embed_tokens, self.lm_head, batch.input_ids, batch.lengths, batch.loss_starts,
            features.features, self.settings, features.final_hidden, generator=generator, anchors=anchors,
            label_ids=batch.labels if batch.labels is not None else features.labels,
            teacher=(features.teacher_ids, features.teacher_logp) if features.teacher_ids is not None else None,
            vocab_ids=self.accelerator.unwrap_model(head).draft_vocab_ids,
        )

    # ------------------------------------------------------------------------------------------------------------

    def evaluate(self) -> dict | None:
        """The held-out numbers of the head as it is now (see `evaluation.evaluate_head`)."""

        def objective(head, batch, anchors):
            return self._objective(head, batch, self.eval_features(batch), anchors=anchors)

        return evaluate_head(
            self.accelerator, self.accelerator.unwrap_model(self.head), self.eval_records, objective, self.settings,
            self.pad_token_id, self.args.eval_batch_size or self.args.per_device_batch_size, self.args.seed,
        )

    # ------------------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """`checkpoint-<step>/`: the head as `save_pretrained` writes it, plus `state/` (optimizer, scheduler, RNG,
        step; the weights are not repeated there) for `--resume`. Checkpoints beyond `save_total_limit` are
        removed, the oldest first."""
        path = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.state.step}"
        if self.is_main:
            # Saved as the plain architecture: the feature scale folded into `fc` (feature_scaling.py).
            head = self.accelerator.unwrap_model(self.head)
            if self.scaled_fc is not None:
                self.scaled_fc.fold()
            head.save_pretrained(path)
            if self.scaled_fc is not None:
                self.scaled_fc.unfold()
        self.accelerator.wait_for_everyone()
        save_training_state(path / STATE_FOLDER, self.optimizer.optimizer if hasattr(self.optimizer, "optimizer")
                            else self.optimizer, self.scheduler, self.state, self.accelerator.process_index,
                            self.is_main)
        self.accelerator.wait_for_everyone()
        if self.is_main and self.args.save_total_limit:
            prune_checkpoints(self.checkpoint_dir, self.args.save_total_limit)
        self.log(f"saved {path}")
        return path

    def _resume(self) -> None:
        resume = self.args.resume
        if not resume:
            return
        state_folder = resume_state_folder(resume, self.checkpoint_dir)
        if state_folder is None:
            self.log(f"--resume latest: no checkpoint in {self.checkpoint_dir}, starting from scratch")
            return
        # The weights come from the checkpoint's own safetensors file, the rest from JSON and safetensors only.
        weights = load_file(str(state_folder.parent / WEIGHTS_FILE))
        self.accelerator.unwrap_model(self.head).load_state_dict(weights)
        if self.scaled_fc is not None:
            self.scaled_fc.load_folded(weights["fc.weight"])
        optimizer = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        load_training_state(state_folder, optimizer, self.scheduler, self.state, self.accelerator.process_index)
        if self.is_main:
            # The interrupted run logged past this step; those lines are written again from here.
            self.training_log.keep_until(self.state.step)
        self.log(f"resumed from {state_folder.parent} at step {self.state.step}")

    def save_final(self) -> Path:
        """Write the head (in `save_dtype`), the target's tokenizer and `training_args.json` to `output_dir`."""
        output_dir = Path(self.args.output_dir)
        if self.is_main:
            # A cast copy, so that the config records the saved dtype and the trained fp32 head stays as it is.
            head = copy.deepcopy(self.accelerator.unwrap_model(self.head))
            if self.scaled_fc is not None:
                self.scaled_fc.folded_copy_of(head)
            head = head.to(torch_dtype(self.args.save_dtype))
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
            (output_dir / TRAINING_ARGS_FILE).write_text(json.dumps(record, indent=2, default=str))
        self.accelerator.wait_for_everyone()
        return output_dir

    def _prepare_run_folders(self) -> None:
        # A fresh run must not append to an earlier run's log, nor leave its checkpoints for `--resume latest`.
        # (`jetspec-hf train fit` checks this before loading anything.)
        args = self.args
        check_run_folders(args.output_dir, args.checkpoint_dir, args.resume, args.overwrite_output_dir)
        if self.is_main and args.overwrite_output_dir and not args.resume:
            clear_earlier_run(args.output_dir, args.checkpoint_dir)
        self.accelerator.wait_for_everyone()

    def train(self) -> dict:
        """Run to `max_steps` (from a checkpoint when `resume` is set), save the final head, return a summary.

        Refuses (`ValueError`) folders that hold an earlier run unless `resume` or `overwrite_output_dir` is set.
        """
        args = self.args
        self._prepare_run_folders()
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
        progress = progress_bar(total=args.max_steps, initial=start_step, desc="training",
                                disable=not (self.is_main and args.progress))
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
            (Path(args.output_dir) / EVAL_RESULTS_FILE).write_text(json.dumps(summary, indent=2))
        return summary

    def _log_eval(self, step: int) -> dict | None:
        result = self.evaluate()
        if result is not None:
            self._log_record({"step": step, **result})
            depths = " ".join(f"{a:.3f}" for a in result["eval_top1_per_depth"])
            self.log(f"eval step {step}: loss {result['eval_loss']:.4f}, mean accepted "
                     f"{result['eval_mean_accepted']:.3f}, top-1 per depth [{depths}]")
        return result


__all__ = ["HeadTrainer", "HeadTrainingArguments", "find_latest_checkpoint"]
