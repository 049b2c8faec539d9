"""Command line of the training recipe: `python -m jetspec_hf.training <command>` or `jetspec-hf train <command>`.

    generate-data   the target's own greedy continuations of prompts -> token sequences (JSONL or a saved dataset)
    fit             train a JetSpec (causal) or DFlash (--bidirectional) head on those sequences

Under several processes: `accelerate launch --num_processes N -m jetspec_hf.training fit ...`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

DESCRIPTION = __doc__.split("\n\n")[0]
EPILOG = """examples:
  python -m jetspec_hf.training generate-data --target TARGET --prompts prompts.jsonl \\
      --max-new-tokens 192 --output data/train.jsonl
  python -m jetspec_hf.training fit --target TARGET --train-data data/train.jsonl --eval-fraction 0.02 \\
      --num-layers 2 --block-size 16 --target-layer-ids 1 3 5 --max-steps 2000 --output-dir heads/jetspec
  accelerate launch --num_processes 2 -m jetspec_hf.training fit ...   (data parallel)
"""


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="folder or Hub id of the frozen Qwen3 target")
    parser.add_argument("--tokenizer", help="tokenizer folder/id (default: the target's)")
    parser.add_argument("--target-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype the target is loaded in (default float32)")
    parser.add_argument("--attn-implementation", default="sdpa", help="target attention backend (default sdpa)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of all subcommands."""
    parser = argparse.ArgumentParser(
        prog="jetspec-hf train", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.required = True

    gen = commands.add_parser("generate-data", help="self-distillation data: the target's greedy continuations",
                              description="Generate the target's own greedy continuations of prompts.")
    _add_target_arguments(gen)
    gen.add_argument("--prompts", nargs="+", required=True,
                     help="JSONL files, saved `datasets` folders, or plain text files (cut into token windows)")
    gen.add_argument("--text-field", help="prompt field of JSONL/dataset records (default: prompt, text or content)")
    gen.add_argument("--window-tokens", type=int, default=64, help="prompt window size for plain text files")
    gen.add_argument("--window-stride", type=int, help="tokens between windows (default: --window-tokens)")
    gen.add_argument("--max-prompt-tokens", type=int, help="keep only the last N tokens of each prompt")
    gen.add_argument("--max-new-tokens", type=int, default=192)
    gen.add_argument("--batch-size", type=int, default=32)
    gen.add_argument("--limit", type=int, help="use at most N prompts (after shuffling with --seed)")
    gen.add_argument("--seed", type=int, default=0, help="shuffles the prompts before --limit")
    gen.add_argument("--chat-template", action="store_true",
                     help="wrap each prompt as a user turn with the tokenizer's chat template (thinking off)")
    gen.add_argument("--system-prompt", help="system turn to add with --chat-template")
    gen.add_argument("--device", help="device for generation (default: cuda if available, else cpu)")
    gen.add_argument("--output", required=True, help="*.jsonl, or a folder for a saved `datasets.Dataset`")
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(command_parser=gen)

    fit = commands.add_parser("fit", help="train a draft head", description="Train a JetSpec/DFlash draft head.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_target_arguments(fit)
    data = fit.add_argument_group("data")
    data.add_argument("--train-data", required=True, help="token sequences from generate-data")
    data.add_argument("--eval-data", help="held-out token sequences (per-depth agreement is measured on them)")
    data.add_argument("--eval-fraction", type=float, default=0.0,
                      help="hold out this fraction of --train-data for evaluation when --eval-data is absent")
    data.add_argument("--max-seq-len", type=int, help="truncate sequences to this many tokens")
    data.add_argument("--cache-features", metavar="DIR",
                      help="compute the target features once into DIR (safetensors shards) and read them from there")
    data.add_argument("--cache-dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    data.add_argument("--cache-only", action="store_true", help="build the --cache-features cache, then stop")

    head = fit.add_argument_group("head")
    head.add_argument("--num-layers", type=int, default=2, help="head decoder layers")
    head.add_argument("--num-heads", type=int, help="attention heads (default: the target's)")
    head.add_argument("--num-kv-heads", type=int, help="key/value heads (default: the target's)")
    head.add_argument("--head-dim", type=int, help="attention head size (default: the target's)")
    head.add_argument("--intermediate-size", type=int, help="MLP width (default: the target's)")
    head.add_argument("--block-size", type=int, default=16, help="anchor + drafted positions per block")
    head.add_argument("--target-layer-ids", type=int, nargs="+",
                      help="tapped target layers (default: one per head layer, spread by the released rule)")
    head.add_argument("--mask-token-id", type=int, help="mask token id (default: the tokenizer's mask token)")
    mask = head.add_mutually_exclusive_group()
    mask.add_argument("--causal", dest="causal", action="store_true", default=True,
                      help="JetSpec: causal mask inside the block")
    mask.add_argument("--bidirectional", dest="causal", action="store_false",
                      help="DFlash: every block position sees the whole block")

    loss = fit.add_argument_group("objective")
    loss.add_argument("--anchors-per-seq", type=int, default=16, help="blocks packed per sequence per step")
    loss.add_argument("--ce-weight", type=float, default=1.0, help="weight of cross-entropy to the next tokens")
    loss.add_argument("--kl-weight", type=float, default=0.0, help="weight of forward KL to the target's logits")
    loss.add_argument("--kl-temperature", type=float, default=1.0)
    loss.add_argument("--depth-gamma", type=float, help="per-depth weight exp(-(d-1)/gamma) (default: uniform)")

    optim = fit.add_argument_group("optimisation")
    optim.add_argument("--max-steps", type=int, default=1000)
    optim.add_argument("--batch-size", type=int, default=8, help="sequences per process per micro-step")
    optim.add_argument("--gradient-accumulation-steps", type=int, default=1)
    optim.add_argument("--lr", type=float, default=3e-4)
    optim.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor, as a fraction of --lr")
    optim.add_argument("--warmup-steps", type=int, help="default: --warmup-ratio of --max-steps")
    optim.add_argument("--warmup-ratio", type=float, default=0.05)
    optim.add_argument("--weight-decay", type=float, default=0.0)
    optim.add_argument("--adam-beta1", type=float, default=0.9)
    optim.add_argument("--adam-beta2", type=float, default=0.95)
    optim.add_argument("--max-grad-norm", type=float, default=1.0)
    optim.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument("--cpu", action="store_true", help="train on the CPU even when an accelerator is present")

    out = fit.add_argument_group("output")
    out.add_argument("--output-dir", required=True, help="final head folder (loads with from_pretrained)")
    out.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    out.add_argument("--log-steps", type=int, default=10)
    out.add_argument("--eval-steps", type=int, default=0, help="evaluate every N steps (always at the end)")
    out.add_argument("--eval-batch-size", type=int)
    out.add_argument("--save-steps", type=int, default=0, help="write checkpoint-<step>/ every N steps")
    out.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept")
    out.add_argument("--checkpoint-dir", help="where checkpoints go (default: --output-dir)")
    out.add_argument("--resume", help="a checkpoint-<step> folder, or `latest`")
    out.add_argument("--no-progress", action="store_true")
    fit.set_defaults(command_parser=fit)
    return parser


def load_target_and_tokenizer(args, parser: argparse.ArgumentParser):
    """The target causal LM (eval mode, frozen) and its tokenizer, with input errors turned into CLI errors."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..configuration_jetspec import JetSpecConfig  # also registers `model_type: jetspec`: a head is recognised

    try:
        config = AutoConfig.from_pretrained(args.target)
    except (OSError, ValueError) as error:
        parser.error(f"--target {args.target}: cannot read a model config ({error})")
    if isinstance(config, JetSpecConfig) or getattr(config, "dflash_config", None) is not None:
        parser.error(f"--target {args.target} is a draft head, not a target model.")
    if not config.model_type.startswith("qwen3"):
        print(f"warning: target model_type is {config.model_type!r}; heads are designed for Qwen3 targets",
              file=sys.stderr)
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.target_dtype]
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype,
                                                  attn_implementation=args.attn_implementation)
    target.eval().requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.target)
    except (OSError, ValueError) as error:
        parser.error(f"cannot load a tokenizer from {args.tokenizer or args.target}: {error}")
    if tokenizer.pad_token_id is None:
        # Padding only fills positions that are never attended to or trained on; EOS is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        parser.error("the tokenizer has neither a pad nor an EOS token.")
    return target, tokenizer


def run_generate_data(args, parser) -> int:
    """`generate-data`: prompts -> the target's greedy continuations -> token sequences on disk."""
    from .data import encode_prompts, generate_continuations, load_prompts, save_sequences

    if args.chat_template is False and args.system_prompt:
        parser.error("--system-prompt needs --chat-template.")
    import torch

    target, tokenizer = load_target_and_tokenizer(args, parser)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    target.to(device)
    try:
        prompts = load_prompts(args.prompts, tokenizer, args.text_field, args.window_tokens, args.window_stride)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if args.limit is not None and args.limit < len(prompts):
        random.Random(args.seed).shuffle(prompts)
        prompts = prompts[: args.limit]
    try:
        prompt_ids = encode_prompts(tokenizer, prompts, args.max_prompt_tokens, args.chat_template,
                                    args.system_prompt)
    except ValueError as error:
        parser.error(str(error))
    records = generate_continuations(target, tokenizer, prompt_ids, args.max_new_tokens, args.batch_size,
                                     show_progress=not args.no_progress)
    path = save_sequences(records, args.output)
    new_tokens = sum(len(r["input_ids"]) - r["prompt_length"] for r in records)
    print(f"wrote {len(records)} sequences ({new_tokens} generated tokens) to {path}")
    return 0


def split_records(records: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded random split of `records` into (train, eval)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError("--eval-fraction must be in [0, 1).")
    count = int(round(len(records) * eval_fraction))
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def run_fit(args, parser) -> int:
    """`fit`: train a head and save it to --output-dir."""
    from .data import load_sequences
    from .heads import head_config_from_target
    from .trainer import HeadTrainer, HeadTrainingArguments

    target, tokenizer = load_target_and_tokenizer(args, parser)
    mask_token_id = args.mask_token_id if args.mask_token_id is not None else tokenizer.mask_token_id
    if mask_token_id is None:
        parser.error(
            "the tokenizer has no mask token: pass --mask-token-id, or add one (e.g. "
            "`tokenizer.add_special_tokens({'mask_token': '<|mask|>'})`, inside the target's vocabulary)."
        )
    try:
        head_config = head_config_from_target(
            target.config, mask_token_id=mask_token_id, num_hidden_layers=args.num_layers,
            num_attention_heads=args.num_heads, num_key_value_heads=args.num_kv_heads, head_dim=args.head_dim,
            intermediate_size=args.intermediate_size, block_size=args.block_size,
            target_layer_ids=args.target_layer_ids, causal=args.causal,
        )
        train_records = load_sequences(args.train_data)
        if args.eval_data:
            eval_records = load_sequences(args.eval_data)
        else:
            train_records, eval_records = split_records(train_records, args.eval_fraction, args.seed)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))

    training_args = HeadTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, learning_rate=args.lr,
        min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2,
        max_grad_norm=args.max_grad_norm, anchors_per_seq=args.anchors_per_seq, ce_weight=args.ce_weight,
        kl_weight=args.kl_weight, kl_temperature=args.kl_temperature, depth_gamma=args.depth_gamma,
        max_seq_len=args.max_seq_len, seed=args.seed, log_steps=args.log_steps, eval_steps=args.eval_steps,
        eval_batch_size=args.eval_batch_size, save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, cache_features=args.cache_features,
        cache_dtype=args.cache_dtype, mixed_precision=args.mixed_precision, cpu=args.cpu, save_dtype=args.save_dtype,
        show_progress=not args.no_progress,
    )
    if args.cache_only and not args.cache_features:
        parser.error("--cache-only needs --cache-features DIR.")
    try:
        trainer = HeadTrainer(target, tokenizer, head_config, train_records, eval_records, training_args)
    except ValueError as error:
        parser.error(str(error))
    if args.cache_only:
        trainer.log(f"feature cache ready in {args.cache_features}")
        return 0
    summary = trainer.train()
    if trainer.is_main:
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jetspec_hf.training` and `jetspec-hf train`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # Errors are reported by the subcommand's own parser, so the usage line shown is the relevant one.
    if args.command == "generate-data":
        return run_generate_data(args, args.command_parser)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    return run_fit(args, args.command_parser)


if __name__ == "__main__":
    sys.exit(main())
