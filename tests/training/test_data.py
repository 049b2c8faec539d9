"""Self-distillation data: batched left-padded generation equals the target's own greedy generate, and storage."""

import json

import pytest
import torch
from tiny_models import EOS_TOKEN_ID, tiny_target, tiny_tokenizer
from training_helpers import write_jsonl

from jetspec_hf.training.__main__ import main
from jetspec_hf.training.data import (
    cut_at_eos,
    encode_prompts,
    fingerprint_sequences,
    generate_continuations,
    load_prompts,
    load_sequences,
    save_sequences,
)

PROMPTS = ["abcdefg", "hij", "klmnopqrstu", "vw", "xyz{|}~", "ABCDEFGHIJKLM", "NOP"]
MAX_NEW = 10


def greedy_one_by_one(target, prompt_ids):
    """The reference: each prompt alone, no padding, plain greedy generate, cut after the first EOS."""
    out = target.generate(torch.tensor([prompt_ids]), max_new_tokens=MAX_NEW, do_sample=False)
    return prompt_ids + cut_at_eos(out[0, len(prompt_ids) :].tolist(), [EOS_TOKEN_ID])


def test_batched_continuations_equal_single_prompt_greedy_generate():
    target, tokenizer = tiny_target(), tiny_tokenizer()
    prompt_ids = encode_prompts(tokenizer, PROMPTS)
    assert [len(p) for p in prompt_ids] == [len(p) for p in PROMPTS]
    records = generate_continuations(target, tokenizer, prompt_ids, max_new_tokens=MAX_NEW, batch_size=3,
                                     show_progress=False)
    assert len(records) == len(PROMPTS)
    for ids, record in zip(prompt_ids, records):
        assert record["prompt_length"] == len(ids)
        assert record["input_ids"] == greedy_one_by_one(target, ids)


def test_eos_cut_keeps_the_eos_and_drops_the_padding():
    assert cut_at_eos([5, 6, 1, 0, 0], [1]) == [5, 6, 1]
    assert cut_at_eos([5, 6, 7], [1]) == [5, 6, 7]


@pytest.mark.parametrize("suffix", [".jsonl", ""])
def test_sequences_round_trip(tmp_path, suffix):
    records = [{"input_ids": [3, 4, 5, 6], "prompt_length": 2}, {"input_ids": [7, 8], "prompt_length": 1}]
    path = save_sequences(records, tmp_path / f"seqs{suffix}")
    loaded = load_sequences(path)
    assert loaded == records
    assert fingerprint_sequences(loaded) == fingerprint_sequences(records)
    assert fingerprint_sequences(records[:1]) != fingerprint_sequences(records)


def test_prompt_sources(tmp_path):
    from datasets import Dataset

    tokenizer = tiny_tokenizer()
    jsonl = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "abc", "other": 1}, {"prompt": "de"}])
    Dataset.from_dict({"text": ["xyz", "uvw"]}).save_to_disk(str(tmp_path / "ds"))
    text = tmp_path / "code.txt"
    text.write_text("a" * 25)
    prompts = load_prompts([jsonl, tmp_path / "ds", text], tokenizer, window_tokens=10)
    # The 25-character file gives windows at 0 and 10 (the 5-token tail is under half a window).
    assert prompts == ["abc", "de", "xyz", "uvw", "a" * 10, "a" * 10]
    with pytest.raises(ValueError, match="Pass --field"):
        load_prompts([jsonl], tokenizer, text_field="missing")
    with pytest.raises(FileNotFoundError):
        load_prompts([tmp_path / "nope.jsonl"], tokenizer)


def test_generate_data_cli(tmp_path, target_dir):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"text": p} for p in PROMPTS[:4]])
    output = tmp_path / "data.jsonl"
    assert main(["generate-data", "--target", str(target_dir), "--prompts", prompts, "--max-new-tokens",
                 str(MAX_NEW), "--batch-size", "2", "--output", str(output), "--no-progress"]) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    target, tokenizer = tiny_target(), tiny_tokenizer()
    for line, prompt in zip(lines, PROMPTS[:4]):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert line["input_ids"] == greedy_one_by_one(target, ids)


def test_chat_template_without_template_is_a_clear_error():
    with pytest.raises(ValueError, match="chat template"):
        encode_prompts(tiny_tokenizer(), ["abc"], chat_template=True)
