"""Training and benchmark read prompt sets with one reader: the same sources, fields and errors."""

import json

import pytest

from jetspec_hf.bench.prompts import load_prompts as bench_prompts
from jetspec_hf.prompts import PROMPT_FIELDS, encode_prompt
from jetspec_hf.training.data import load_prompts as training_prompts
from tiny_models import tiny_tokenizer


def test_both_commands_read_the_same_prompts(tmp_path):
    source = tmp_path / "mixed.jsonl"
    records = [{"question": "q1"}, {"text": "t2"}, {"turns": ["first turn", "second"]}, {"content": "c4"}]
    source.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    expected = ["q1", "t2", "first turn", "c4"]
    assert bench_prompts(str(source)) == training_prompts([source]) == expected
    assert bench_prompts(str(source), samples=2) == expected[:2]
    readers = (lambda: bench_prompts(str(source), field="answer"), lambda: training_prompts([source], None, "answer"))
    for read in readers:
        with pytest.raises(ValueError, match="no prompt field \\('answer'\\).*Pass --field"):
            read()
    assert PROMPT_FIELDS[0] == "prompt"


def test_saved_datasets_and_splits(tmp_path):
    import datasets  # the `dev` extra installs it
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"problem": ["p1", "p2"]}),
                          "test": datasets.Dataset.from_dict({"problem": ["t1", "t2", "t3"]})}).save_to_disk(saved)
    assert bench_prompts(str(saved), split="test", samples=2) == ["t1", "t2"]
    assert training_prompts([saved]) == ["p1", "p2"]  # no split named: train
    with pytest.raises(ValueError, match="not 'validation'"):
        bench_prompts(str(saved), split="validation")
    with pytest.raises(FileNotFoundError):
        training_prompts([tmp_path / "missing"])


def test_one_encoding_for_both(tmp_path):
    tokenizer = tiny_tokenizer()
    assert encode_prompt(tokenizer, "abc") == tokenizer("abc", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompt(tokenizer, "abc", chat_template=True)
