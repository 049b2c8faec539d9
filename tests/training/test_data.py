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
    target_argmax_labels,
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


@pytest.mark.parametrize("suffix", [".jsonl", ""])
def test_labels_round_trip_and_are_optional_per_record(tmp_path, suffix):
    records = [{"input_ids": [3, 4, 5, 6], "prompt_length": 2, "labels": [3, 9, 9, 6]},
               {"input_ids": [7, 8], "prompt_length": 1}]
    loaded = load_sequences(save_sequences(records, tmp_path / f"seqs{suffix}"))
    assert loaded[0] == records[0]
    # A dataset has the column in every row: a record without labels comes back labelled with its own tokens.
    assert loaded[1].get("labels", records[1]["input_ids"]) == records[1]["input_ids"]
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"input_ids": [3, 4, 5], "labels": [3, 4]}])
    with pytest.raises(ValueError, match="2 labels for 3 tokens"):
        load_sequences(broken)


def test_target_labels_are_its_greedy_tokens_at_every_prefix():
    target = tiny_target()
    generator = torch.Generator().manual_seed(0)
    records = [{"input_ids": torch.randint(3, 90, (n,), generator=generator).tolist(), "prompt_length": 0}
               for n in (9, 14, 5)]
    labelled = target_argmax_labels(target, records, batch_size=2, show_progress=False)
    for record, out in zip(records, labelled):
        ids = record["input_ids"]
        assert out["input_ids"] == ids and out["prompt_length"] == 0
        with torch.no_grad():
            expected = [target(torch.tensor([ids[:t]])).logits[0, -1].argmax().item() for t in range(1, len(ids))]
        assert out["labels"] == ids[:1] + expected
    # On the target's own greedy continuation the labels are the continuation's tokens.
    greedy = generate_continuations(target, tiny_tokenizer(), [[5, 6, 7]], max_new_tokens=8, show_progress=False)
    relabelled = target_argmax_labels(target, greedy, show_progress=False)[0]
    assert relabelled["labels"][3:] == greedy[0]["input_ids"][3:]


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
