"""The settings of the training recipe, as dataclasses: `HfArgumentParser` builds `jetspec-hf train`'s command line
from them (one option per field, its help from the field's metadata, defaults shown by the parser), and library
users fill the same classes in Python.

Option names are the field names (`--learning_rate` / `--learning-rate`); the short names the command line has
always had (`--lr`, `--batch-size`, `--num-layers`, ...) stay as aliases. The prompt source options are named as in
`jetspec-hf bench` (`--dataset`, `--field`); `--prompts` / `--text-field` still work.

This module imports no torch, so that `--help` is immediate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..dtypes import DtypeName


def option(help: str, *aliases: str, **kwargs):
    """A dataclass field that `HfArgumentParser` turns into an option with this help and these extra names."""
    return field(metadata={"help": help, "aliases": list(aliases)}, **kwargs)


@dataclass
class TargetArguments:
    """The frozen target (both subcommands)."""

    _argument_group_name = "target"

    target: str = option("the frozen target: a folder, a Hub id, a .gguf file or `smollm2-135m-instruct` "
                         "(Qwen3, Qwen3-MoE, Llama, Qwen2 or Mistral)")
    tokenizer: str | None = option("tokenizer folder or Hub id (default: the target's)", default=None)
    target_dtype: DtypeName = option("dtype the target is loaded in", default="float32")
    attn_implementation: str = option("attention backend of the target", default="sdpa")
    threads: int | None = option("torch CPU threads (default: torch's choice)", default=None)


@dataclass
class GenerateDataArguments:
    """`generate-data`: the target's own greedy continuations of a prompt set."""

    _argument_group_name = "prompts and generation"

    dataset: list[str] = option(
        "prompt sources: JSON Lines files, `datasets` folders or names, or plain text files (cut into token windows)",
        "--prompts",
    )
    output: str = option("where the sequences go: *.jsonl, or a folder for a saved `datasets.Dataset`")
    field: str | None = option(
        "record field holding the prompt (default: the first of prompt, text, question, problem, instruction, "
        "content, turns)", "--text-field", default=None,
    )
    split: str | None = option("split of a `datasets` source with several (default: train, or the only one)",
                               default=None)
    window_tokens: int = option("prompt length for plain text files, in tokens", default=64)
    window_stride: int | None = option("tokens between text windows (default: --window-tokens)", default=None)
    max_prompt_tokens: int | None = option("keep only the last N tokens of each prompt", default=None)
    max_new_tokens: int = option("tokens the target generates per prompt", default=192)
    batch_size: int = option("prompts generated together (left-padded)", default=32)
    limit: int | None = option("use at most N prompts, drawn at random with --seed", default=None)
    seed: int = option("seeds the draw of --limit prompts", default=0)
    chat_template: bool = option(
        "wrap each prompt as a user turn with the tokenizer's chat template (thinking off)", default=False
    )
    system_prompt: str | None = option("system turn to add with --chat-template", default=None)
    teacher_forced: bool = option(
        "keep each conversation's own first answer instead of generating one (conversation sources such as "
        "`sharegpt`; needs --chat-template): `fit` then labels every position with the target's own greedy token",
        default=False,
    )
    max_seq_len: int | None = option("with --teacher-forced: cut each sequence to this many tokens", default=None)
    device: str | None = option("device for generation (default: cuda when available, else cpu)", default=None)
    progress: bool = option("progress bar: shown; --no-progress hides it", default=True)


@dataclass
class HeadArguments:
    """`fit`: the shape of the new head; what must match the target is copied from it."""

    _argument_group_name = "head"

    num_layers: int = option("decoder layers of the head", "--num-hidden-layers", default=2)
    num_heads: int | None = option("attention heads (default: the target's)", default=None)
    num_kv_heads: int | None = option("key/value heads (default: the target's)", default=None)
    head_dim: int | None = option("size of one attention head (default: the target's)", default=None)
    intermediate_size: int | None = option("MLP width (default: the target's)", default=None)
    block_size: int = option("positions drafted per forward, the anchor included", default=16)
    target_layer_ids: list[int] | None = option(
        "tapped target layers, 0-based (default: one per head layer, spread by the released heads' rule)", default=None
    )
    mask_token_id: int | None = option("token filling the unknown block positions (default: the tokenizer's mask "
                                       "token)", default=None)
    causal: bool = option(
        "the block mask: causal for JetSpec; --no-causal (or --bidirectional) for DFlash's full mask", default=True
    )
    draft_vocab_size: int | None = option(
        "rank only this many target tokens when drafting: the most frequent labels of the training data (cuts the "
        "draft's vocabulary projection and the training step; default: the whole vocabulary)", default=None,
    )



@dataclass
class FitDataArguments:
    """`fit`: the token sequences to train and evaluate on."""

    _argument_group_name = "data"

    train_data: str = option("token sequences written by generate-data (JSONL or a `datasets` folder)")
    eval_data: str | None = option("held-out token sequences; per-depth agreement is measured on them", default=None)
    eval_fraction: float = option("hold out this fraction of --train-data when --eval-data is absent", default=0.0)
    cache_only: bool = option("build the --cache-features cache, then stop", default=False)


@dataclass
class HeadTrainingArguments:
    """Settings of one head training run: optimisation, objective, evaluation, checkpoints and output."""

    _argument_group_name = "training"

    output_dir: str = option("the final head's folder (loads with from_pretrained); also holds log.jsonl")
    max_steps: int = option("optimizer steps", default=1000)
    per_device_batch_size: int = option("sequences per process per micro-step", "--batch-size", default=8)
    gradient_accumulation_steps: int = option("micro-steps per optimizer step", default=1)
    learning_rate: float = option("peak learning rate", "--lr", default=3e-4)
    min_lr_ratio: float = option("final learning rate of the cosine decay, as a fraction of the peak", default=0.1)
    warmup_steps: int | None = option("linear warm-up steps (default: --warmup-ratio of --max-steps)", default=None)
    warmup_ratio: float = option("warm-up length as a fraction of --max-steps", default=0.05)
    weight_decay: float = option("AdamW weight decay", default=0.0)
    adam_beta1: float = option("AdamW beta1", default=0.9)
    adam_beta2: float = option("AdamW beta2", default=0.95)
    max_grad_norm: float = option("gradient clipping norm", default=1.0)
    anchors_per_seq: int = option("blocks packed per sequence per step", default=16)
    ce_weight: float = option("weight of the cross-entropy to the next tokens", default=1.0)
    kl_weight: float = option("weight of the forward KL to the target's distribution", default=0.0)
    kl_temperature: float = option("temperature of the KL term", default=1.0)
    depth_gamma: float | None = option("per-depth loss weight exp(-(d-1)/gamma) (default: uniform)", default=None)
    max_seq_len: int | None = option("truncate sequences to this many tokens", default=None)
    seed: int = option("seeds the head's initialisation, the batches and the anchors", default=0)
    log_steps: int = option("log the training loss every N steps", default=10)
    eval_steps: int = option("evaluate every N steps; 0: only at the end", default=0)
    eval_batch_size: int | None = option("sequences per evaluation batch (default: --batch-size)", default=None)
    save_steps: int = option("write checkpoint-<step>/ every N steps; 0: none", default=0)
    save_total_limit: int | None = option("checkpoints kept (the oldest go first)", default=2)
    checkpoint_dir: str | None = option("where checkpoints go (default: --output-dir)", default=None)
    resume: str | None = option("continue from a checkpoint-<step> folder, or `latest`", default=None)
    overwrite_output_dir: bool = option(
        "start afresh in folders that hold an earlier run: its log and checkpoints are deleted", default=False
    )
    cache_features: str | None = option(
        "compute the target features once into this folder (safetensors shards) and read them from there",
        default=None,
    )
    cache_dtype: DtypeName = option("dtype of the cached features", default="float32")
    cache_layer_ids: list[int] | None = option(
        "tap these target layers into the cache (a superset of the head's, so that heads tapping other layers "
        "train from the same cache; default: the head's)", default=None,
    )
    cache_shard_size: int = option("sequences per cache shard (a shard is the unit an interrupted build resumes "
                                   "at)", default=256)
    teacher_top_k: int = option(
        "with --cache-features: store the target's greedy label and its K most likely tokens at every position, "
        "so that labels and the KL term come from the same single target pass as the features (0: labels only)",
        default=0,
    )
    scale_features: bool = option(
        "train `fc` on tapped features divided by a fixed per-dimension scale (real targets' massive activations "
        "otherwise swamp it), folded into the saved weight; --no-scale-features trains on the raw features",
        default=True,
    )
    init_from_target: bool = option(
        "start the head's layers from the target's last decoder layers (same widths needed; the Qwen3 q/k norms "
        "start at one), its final norm from the target's and `fc` passing the last tapped layer through, instead "
        "of at random", default=False,
    )
    init_from_head: str | None = option(
        "start from a saved head's weights and draft vocabulary (a folder `fit` or `save_pretrained` wrote, or a "
        "Hub repo id) with a fresh schedule: longer training on more data, from where an earlier run ended. Its "
        "architecture must be the one the head flags describe", default=None,
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = option("autocast precision of the head", default="no")
    cpu: bool = option("train on the CPU even when an accelerator is present", default=False)
    save_dtype: DtypeName = option("dtype of the saved head", default="float32")
    progress: bool = option("progress bar: shown; --no-progress hides it", default=True)

    def objective_settings(self, head_config):
        """The loss settings (`ObjectiveSettings`) for a head with `head_config`."""
        from .objective import ObjectiveSettings

        return ObjectiveSettings.from_head_config(
            head_config,
            anchors_per_seq=self.anchors_per_seq,
            ce_weight=self.ce_weight,
            kl_weight=self.kl_weight,
            kl_temperature=self.kl_temperature,
            depth_gamma=self.depth_gamma,
        )


__all__ = [
    "FitDataArguments",
    "GenerateDataArguments",
    "HeadArguments",
    "HeadTrainingArguments",
    "TargetArguments",
    "option",
]
