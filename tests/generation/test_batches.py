"""Batches: every row of a left-padded batch decodes exactly as that row alone, and as plain batched `generate`."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, pipeline

import jetspec_hf
from tiny_models import random_prompt, refuse_forwards, tiny_tokenizer

LENGTHS = (3, 9, 5, 14, 1, 7, 11, 2)


def _left_padded(prompts):
    longest = max(prompt.shape[1] for prompt in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - prompt.shape[1] :] = prompt[0]
        mask[row, longest - prompt.shape[1] :] = 1
    return ids, mask


def _alone(target, prompt, **kwargs):
    return target.generate(prompt, do_sample=False, **kwargs)[0, prompt.shape[1] :].tolist()


def _rows_equal_their_runs_alone(target, prompts, batched, pad_token_id, **kwargs):
    width = max(prompt.shape[1] for prompt in prompts)
    for row, prompt in enumerate(prompts):
        new = batched[row, width:].tolist()
        alone = _alone(target, prompt, **kwargs)
        assert new[: len(alone)] == alone, f"row {row}"
        assert all(token == pad_token_id for token in new[len(alone) :]), f"row {row} is not padded as plain pads"


@pytest.mark.parametrize("batch_size", [2, 4, 8])
@pytest.mark.parametrize("budget", [1, 8, 32])
def test_every_row_equals_its_plain_run_alone(pair, batch_size, budget):
    target, head = pair
    prompts = [random_prompt(seed, length) for seed, length in enumerate(LENGTHS[:batch_size])]
    ids, mask = _left_padded(prompts)
    for new_tokens in (1, 6, 21):
        plain = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens)
        got = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                              assistant_model=head, tree_budget=budget, return_dict_in_generate=True)
        assert torch.equal(got.sequences, plain)
        _rows_equal_their_runs_alone(target, prompts, got.sequences, target.generation_config.pad_token_id,
                                     max_new_tokens=new_tokens)
        assert len(got.accepted_lengths) == batch_size and all(isinstance(row, list) for row in got.accepted_lengths)


def test_rows_hitting_eos_at_different_rounds_are_padded_as_plain_pads_them(pair):
    target, head = pair
    prompts = [random_prompt(seed + 20, length) for seed, length in enumerate(LENGTHS[:6])]
    ids, mask = _left_padded(prompts)
    free_runs = [_alone(target, prompt, max_new_tokens=24) for prompt in prompts]
    # Stop rows at different points: EOS ids taken from different rows' free runs.
    eos = [1, free_runs[0][3], free_runs[2][10], free_runs[4][17]]
    plain = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=24, eos_token_id=eos)
    for budget in (4, 16):
        got = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=24, eos_token_id=eos,
                              assistant_model=head, tree_budget=budget)
        assert torch.equal(got, plain)
    _rows_equal_their_runs_alone(target, prompts, plain, target.generation_config.pad_token_id, max_new_tokens=24,
                                 eos_token_id=eos)
    assert len({len(_alone(target, prompt, max_new_tokens=24, eos_token_id=eos)) for prompt in prompts}) > 2


@jetspec_hf.mark_row_safe
class StopAfterToken(StoppingCriteria):
    """Judges every row alike and keeps no state: declared safe to run per row."""

    def __init__(self, token_id, prompt_length):
        self.token_id, self.prompt_length = token_id, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids[:, self.prompt_length :] == self.token_id).any(dim=1)


def test_without_an_eos_criterion_finished_rows_keep_decoding_as_plain_does(pair):
    # No EOS: plain decoding gives a row that a custom criterion finished real tokens until every row finishes.
    target, head = pair
    prompts = [random_prompt(seed + 40, length) for seed, length in enumerate(LENGTHS[:4])]
    ids, mask = _left_padded(prompts)
    token = _alone(target, prompts[1], max_new_tokens=12)[2]
    criteria = StoppingCriteriaList([StopAfterToken(token, ids.shape[1])])
    settings = dict(attention_mask=mask, do_sample=False, max_new_tokens=30, stopping_criteria=criteria,
                    eos_token_id=None, pad_token_id=0)
    plain = target.generate(ids, **settings)
    got = target.generate(ids, assistant_model=head, tree_budget=8, **settings)
    assert torch.equal(got, plain)


@pytest.mark.parametrize(
    "processors",
    [dict(repetition_penalty=1.4), dict(no_repeat_ngram_size=2), dict(min_new_tokens=5, eos_token_id=[1, 40, 41])],
    ids=["repetition-penalty", "no-repeat-ngram", "min-new-tokens"],
)
def test_processors_see_each_row_s_own_prefix(pair, processors):
    target, head = pair
    prompts = [random_prompt(seed + 60, length) for seed, length in enumerate(LENGTHS[:4])]
    ids, mask = _left_padded(prompts)
    plain = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=16, **processors)
    got = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=16, assistant_model=head,
                          tree_budget=16, **processors)
    assert torch.equal(got, plain)


def test_batched_hybrid_trees_and_fanout_trees(pair):
    target, head = pair
    prompts = [random_prompt(seed + 80, length) for seed, length in enumerate(LENGTHS[:4])]
    ids, mask = _left_padded(prompts)
    plain = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=20)
    for settings in (dict(prompt_lookup_num_tokens=5), dict(tree_expansion="fanout", tree_width=3)):
        got = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=20, assistant_model=head,
                              tree_budget=12, **settings)
        assert torch.equal(got, plain)


def test_text_generation_pipeline_with_a_batch(pair):
    target, head = pair
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = "left"
    generator = pipeline("text-generation", model=target, tokenizer=tokenizer)
    texts = [tokenizer.decode(random_prompt(seed, length)[0]) for seed, length in enumerate(LENGTHS[:6])]
    plain = generator(texts, max_new_tokens=8, do_sample=False, batch_size=4)
    tree = generator(texts, max_new_tokens=8, do_sample=False, batch_size=4, assistant_model=head)
    assert [out[0]["generated_text"] for out in tree] == [out[0]["generated_text"] for out in plain]


def test_a_left_padded_single_prompt_continues_from_its_returned_cache(pair):
    # Padding stays in the cache as plain decoding keeps it, so tree and plain turns can follow each other.
    target, head = pair
    prompt = random_prompt(90, 6)
    ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(prompt)], dim=1)
    first = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=7, assistant_model=head,
                            return_dict_in_generate=True)
    turn = torch.cat([first.sequences, random_prompt(91, 3)], dim=1)
    turn_mask = torch.cat([mask, torch.ones(1, turn.shape[1] - mask.shape[1], dtype=torch.long)], dim=1)
    fresh = target.generate(turn, attention_mask=turn_mask, do_sample=False, max_new_tokens=6)
    for continue_with_head in (True, False):
        cache = first.cache if continue_with_head else _copy_cache(first.cache)
        extra = dict(assistant_model=head) if continue_with_head else {}
        got = target.generate(turn, attention_mask=turn_mask, cache=cache, do_sample=False, max_new_tokens=6,
                              **extra)
        assert torch.equal(got, fresh)
        if continue_with_head:
            first = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=7,
                                    assistant_model=head, return_dict_in_generate=True)


def _copy_cache(cache):
    import copy

    return copy.deepcopy(cache)
