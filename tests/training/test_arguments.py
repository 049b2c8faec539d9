"""The training command line is built from the settings dataclasses: every field is an option with help, the
defaults are stated once, the historical flags still work, and the learning-rate schedule is transformers' with
the recipe's one-step-ahead warm-up."""

import argparse
import dataclasses
import math

import pytest
import torch

from jetspec_hf.training.__main__ import COMMANDS, build_parser
from jetspec_hf.training.arguments import GenerateDataArguments, HeadArguments, HeadTrainingArguments
from jetspec_hf.training.schedule import warmup_cosine_schedule


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_help_and_states_its_default_once(command):
    parser = build_parser(command)
    options = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    assert all(action.help for action in options), [action.option_strings for action in options if not action.help]
    fields = {field.name for dataclass in COMMANDS[command][1] for field in dataclasses.fields(dataclass)}
    assert fields <= {action.dest for action in options}
    text = parser.format_help()
    assert "(default: None)" not in text
    for paragraph in text.split("\n  --"):
        assert paragraph.count("default") <= 1, paragraph


def test_historical_flags_and_bench_names_parse_to_the_same_fields():
    fit = build_parser("fit")
    *parsed, _ = fit.parse_args_into_dataclasses(
        ["--target", "t", "--train-data", "d.jsonl", "--output-dir", "o", "--lr", "1e-3", "--batch-size", "2",
         "--num-layers", "3", "--bidirectional", "--no-progress", "--target-layer-ids", "1", "3"],
        return_remaining_strings=True, look_for_args_file=False,
    )
    head = next(item for item in parsed if isinstance(item, HeadArguments))
    training = next(item for item in parsed if isinstance(item, HeadTrainingArguments))
    assert (training.learning_rate, training.per_device_batch_size, training.progress) == (1e-3, 2, False)
    assert (head.num_layers, head.causal, head.target_layer_ids) == (3, False, [1, 3])

    generate = build_parser("generate-data")
    for flags in (["--dataset", "a.jsonl", "b.txt", "--field", "question"],
                  ["--prompts", "a.jsonl", "b.txt", "--text-field", "question"]):
        *parsed, _ = generate.parse_args_into_dataclasses(["--target", "t", "--output", "o.jsonl", *flags],
                                                          return_remaining_strings=True, look_for_args_file=False)
        data = next(item for item in parsed if isinstance(item, GenerateDataArguments))
        assert (data.dataset, data.field) == (["a.jsonl", "b.txt"], "question")


def _recipe_multiplier(step, total, warmup, min_ratio):
    """The schedule the bundled heads were trained with, written out."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup", [0, 1, 50])
def test_schedule_reproduces_the_recipe_exactly(warmup):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = warmup_cosine_schedule(optimizer, warmup, 300, 0.1)
    rates = []
    for _ in range(300):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates == [1e-3 * _recipe_multiplier(step, 300, warmup, 0.1) for step in range(300)]
