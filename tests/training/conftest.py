"""Fixtures of the training tests: a tiny random target saved with its tokenizer, and a repetitive corpus."""

import pytest
from tiny_models import tiny_target, tiny_tokenizer
from training_helpers import repetitive_records, write_jsonl


@pytest.fixture(scope="session")
def target_dir(tmp_path_factory):
    """A tiny random Qwen3 target and its character-level tokenizer (with a mask token), saved to a folder."""
    folder = tmp_path_factory.mktemp("tiny_target")
    tiny_target().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def repetitive_data(tmp_path_factory):
    """(train JSONL path, eval JSONL path) of repetitive sequences."""
    folder = tmp_path_factory.mktemp("repetitive")
    return (write_jsonl(folder / "train.jsonl", repetitive_records(48, seed=0)),
            write_jsonl(folder / "eval.jsonl", repetitive_records(8, seed=1)))
