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

from ..extras import MissingExtraError, require_extra
from .arguments import FitDataArguments, GenerateDataArguments, HeadArguments, HeadTrainingArguments, TargetArguments

DESCRIPTION = __doc__.split("\n\n")[0]
EPILOG = """examples:
  python -m jetspec_hf.training generate-data --target TARGET --dataset prompts.jsonl \\
      --max-new-tokens 192 --output data/train.jsonl
  python -m jetspec_hf.training fit --target TARGET --train-data data/train.jsonl --eval-fraction 0.02 \\
      --num-layers 2 --block-size 16 --target-layer-ids 1 3 5 --max-steps 2000 --output-dir heads/jetspec
  accelerate launch --num_processes 2 -m jetspec_hf.training fit ...   (data parallel)

Run `jetspec-hf train <command> --help` for the options of a command.
"""

# command -> (one-line help, the dataclasses its options come from)
COMMANDS = {
    "generate-data": (
        "self-distillation data: the target's greedy continuations of prompts",
        (TargetArguments, GenerateDataArguments),
    ),
    "fit": (
        "train a JetSpec (causal) or DFlash (--bidirectional) draft head",
        (TargetArguments, FitDataArguments, HeadArguments, HeadTrainingArguments),
    ),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States an option's default once: not for options that have none, nor where the help already describes it,
    nor for on/off switches (whose help says what they do)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or "default" in help_text or action.nargs == 0:
            return help_text
        return super()._get_help_string(action)


def build_parser(command: str):
    """The `HfArgumentParser` of one subcommand, built from its dataclasses."""
    from transformers import HfArgumentParser

    help_text, dataclasses = COMMANDS[command]
    parser = HfArgumentParser(dataclasses, prog=f"jetspec-hf train {command}", formatter_class=HelpFormatter,
                              description=help_text[0].upper() + help_text[1:] + ".")
    if command == "fit":
        # The historical spelling of `--no-causal`.
        parser.add_argument("--bidirectional", dest="causal", action="store_false",
                            help="DFlash's bidirectional mask inside the block (same as --no-causal)")
    return parser


def _top_level_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jetspec-hf train", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def load_target_and_tokenizer(target_args: TargetArguments, parser: argparse.ArgumentParser):
    """The target causal LM (eval mode, frozen) and its tokenizer, with input errors turned into CLI errors."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..configuration_jetspec import JetSpecConfig  # also registers `model_type: jetspec`: a head is recognised
    from ..targets import MissingTargetError, resolve_target

    try:
        folder = resolve_target(target_args.target)
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, MissingTargetError) as error:
        parser.error(f"--target {target_args.target}: cannot read a model config ({error})")
    if isinstance(config, JetSpecConfig) or getattr(config, "dflash_config", None) is not None:
        parser.error(f"--target {target_args.target} is a draft head, not a target model.")
    target = AutoModelForCausalLM.from_pretrained(folder, dtype=target_args.target_dtype,
                                                  attn_implementation=target_args.attn_implementation)
    target.eval().requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(target_args.tokenizer or folder)
    except (OSError, ValueError) as error:
        parser.error(f"cannot load a tokenizer from {target_args.tokenizer or target_args.target}: {error}")
    if tokenizer.pad_token_id is None:
        # Padding only fills positions that are never attended to or trained on; EOS is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        parser.error("the tokenizer has neither a pad nor an EOS token.")
    return target, tokenizer


def _require_datasets_for(paths, output: str | None = None) -> None:
    """`datasets` is needed to read `datasets` sources or to write a `datasets` folder: checked before any work."""
    from ..prompts import needs_datasets

    for path in [path for path in paths if path is not None]:
        if needs_datasets(path):
            require_extra("train", "datasets", purpose=f"Reading {path} (not a JSON Lines or text file)")
    if output is not None and Path(output).suffix != ".jsonl":
        require_extra("train", "datasets", purpose=f"Writing {output} as a `datasets` folder (not a .jsonl file)")


def run_generate_data(target_args: TargetArguments, args: GenerateDataArguments, parser) -> int:
    """`generate-data`: prompts -> the target's greedy continuations -> token sequences on disk."""
    if args.system_prompt and not args.chat_template:
        parser.error("--system-prompt needs --chat-template.")
    if args.teacher_forced and not args.chat_template:
        parser.error("--teacher-forced needs --chat-template (the conversations are laid out with it).")
    try:
        _require_datasets_for(args.dataset, args.output)
    except MissingExtraError as error:
        parser.error(str(error))

    import torch

    from .data import encode_prompts, generate_continuations, load_prompts, save_sequences

    if args.teacher_forced:
        return _write_teacher_forced(target_args, args, parser)
    target, tokenizer = load_target_and_tokenizer(target_args, parser)
    target.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        prompts = load_prompts(args.dataset, tokenizer, args.field, args.window_tokens, args.window_stride,
                               split=args.split)
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
                                     show_progress=args.progress)
    path = save_sequences(records, args.output)
    new_tokens = sum(len(record["input_ids"]) - record["prompt_length"] for record in records)
    print(f"wrote {len(records)} sequences ({new_tokens} generated tokens) to {path}")
    return 0


def _write_teacher_forced(target_args: TargetArguments, args: GenerateDataArguments, parser) -> int:
    """`generate-data --teacher-forced`: each conversation's first exchange as it is, laid out with the chat
    template; no target forward (the labels come from the target when `fit` builds its feature cache)."""
    from transformers import AutoTokenizer

    from ..conversations import encode_first_exchange, read_conversations
    from ..targets import resolve_target
    from .data import save_sequences

    try:
        tokenizer = AutoTokenizer.from_pretrained(target_args.tokenizer or resolve_target(target_args.target))
        conversations = [c for source in args.dataset for c in read_conversations(source, split=args.split)]
    except (OSError, ValueError) as error:
        parser.error(str(error))
    if args.limit is not None and args.limit < len(conversations):
        random.Random(args.seed).shuffle(conversations)
        conversations = conversations[: args.limit]
    records = [encode_first_exchange(tokenizer, messages, args.max_seq_len) for messages in conversations]
    records = [record for record in records if record is not None]
    path = save_sequences(records, args.output)
    answer_tokens = sum(len(record["input_ids"]) - record["prompt_length"] for record in records)
    print(f"wrote {len(records)} conversations ({answer_tokens} answer tokens) to {path}")
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


def run_fit(target_args: TargetArguments, data: FitDataArguments, head: HeadArguments,
            training_args: HeadTrainingArguments, parser) -> int:
    """`fit`: train a head and save it to --output-dir."""
    from .run_folder import check_run_folders

    if data.cache_only and not training_args.cache_features:
        parser.error("--cache-only needs --cache-features DIR.")
    try:
        # Before the target is loaded: folders holding an earlier run, and missing optional packages.
        check_run_folders(training_args.output_dir, training_args.checkpoint_dir, training_args.resume,
                          training_args.overwrite_output_dir or data.cache_only)
        _require_datasets_for([path for path in (data.train_data, data.eval_data) if path and Path(path).is_dir()])
    except (ValueError, MissingExtraError) as error:
        parser.error(str(error))

    from .data import load_sequences
    from .heads import head_config_from_target
    from .trainer import HeadTrainer

    target, tokenizer = load_target_and_tokenizer(target_args, parser)
    from ..targets import mask_token_id_for

    mask_token_id = head.mask_token_id if head.mask_token_id is not None else mask_token_id_for(tokenizer)
    if mask_token_id is None:
        parser.error(
            "the tokenizer has no mask token: pass --mask-token-id, or add one (e.g. "
            "`tokenizer.add_special_tokens({'mask_token': '<|mask|>'})`, inside the target's vocabulary)."
        )
    try:
        head_config = head_config_from_target(
            target.config, mask_token_id=mask_token_id, num_hidden_layers=head.num_layers,
            num_attention_heads=head.num_heads, num_key_value_heads=head.num_kv_heads, head_dim=head.head_dim,
            intermediate_size=head.intermediate_size, block_size=head.block_size,
            target_layer_ids=head.target_layer_ids, causal=head.causal, draft_vocab_size=head.draft_vocab_size,
        )
        train_records = load_sequences(data.train_data)
        if data.eval_data:
            eval_records = load_sequences(data.eval_data)
        else:
            train_records, eval_records = split_records(train_records, data.eval_fraction, training_args.seed)
        trainer = HeadTrainer(target, tokenizer, head_config, train_records, eval_records, training_args)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if data.cache_only:
        trainer.log(f"feature cache ready in {training_args.cache_features}")
        return 0
    summary = trainer.train()
    if trainer.is_main:
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jetspec_hf.training` and `jetspec-hf train`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top_level = _top_level_parser()
    if not argv or argv[0] not in COMMANDS:
        top_level.parse_args(argv[:1])  # prints the help, or the error naming the commands; exits
    command = argv[0]
    parser = build_parser(command)
    *parsed, unknown = parser.parse_args_into_dataclasses(argv[1:], return_remaining_strings=True,
                                                          look_for_args_file=False)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")

    from ..log import set_verbosity_info

    set_verbosity_info()  # progress notes on stderr; results on stdout
    target_args = parsed[0]
    if target_args.threads:
        import torch

        torch.set_num_threads(target_args.threads)
    if command == "generate-data":
        return run_generate_data(*parsed, parser)
    return run_fit(*parsed, parser)


if __name__ == "__main__":
    sys.exit(main())
