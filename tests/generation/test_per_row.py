"""Batches never run a processor or criterion per row unless it gives plain batched decoding's result that way:
transformers' own are shared or split, row-indexed custom objects are refused before any work, and lm-eval's
batch-level stop-sequence criterion stops the batch where plain batched decoding stops it."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

import jetspec_hf
from jetspec_hf.generation.per_row import RowSplitError, criteria_for_rows, processors_for_rows
from tiny_models import random_prompt, refuse_forwards, tiny_tokenizer


def left_padded(prompts):
    longest = max(prompt.shape[1] for prompt in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, longest - prompt.shape[1]:], mask[row, longest - prompt.shape[1]:] = prompt[0], 1
    return ids, mask


def batch(seed=0, rows=3):
    return left_padded([random_prompt(seed + row, 3 + 4 * row) for row in range(rows)])


class BanTokenOfRow(LogitsProcessor):
    """A rule per batch row: row r may never emit token 10 + r. Run with one row's ids, it would apply row 0's."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for row in range(input_ids.shape[0]):
            scores[row, 10 + row] = -float("inf")
        return scores


class StopRowAfter(StoppingCriteria):
    """Per-row limits: row r stops after 4 + 3r new tokens."""

    def __init__(self, prompt_length):
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        limits = torch.tensor([4 + 3 * row for row in range(input_ids.shape[0])])
        return input_ids.shape[1] - self.prompt_length >= limits


def test_a_row_indexed_custom_processor_is_refused_before_any_work(pair, monkeypatch):
    target, head = pair
    ids, mask = batch()
    refuse_forwards(monkeypatch, target)
    with pytest.raises(RowSplitError, match=r"logits processor .*BanTokenOfRow.*batch of 3.*batch size 1"):
        target.generate(ids, attention_mask=mask, max_new_tokens=8, assistant_model=head,
                        logits_processor=LogitsProcessorList([BanTokenOfRow()]))


def test_a_row_indexed_custom_criterion_is_refused_before_any_work(pair, monkeypatch):
    target, head = pair
    ids, mask = batch()
    refuse_forwards(monkeypatch, target)
    with pytest.raises(RowSplitError, match=r"stopping criterion .*StopRowAfter.*mark_row_safe"):
        target.generate(ids, attention_mask=mask, max_new_tokens=8, assistant_model=head,
                        stopping_criteria=StoppingCriteriaList([StopRowAfter(ids.shape[1])]))


def test_the_same_objects_run_unchanged_for_one_sequence(pair):
    target, head = pair
    prompt = random_prompt(3, 6)
    settings = dict(do_sample=False, max_new_tokens=12, logits_processor=LogitsProcessorList([BanTokenOfRow()]),
                    stopping_criteria=StoppingCriteriaList([StopRowAfter(6)]))
    assert torch.equal(target.generate(prompt, assistant_model=head, tree_budget=8, **settings),
                       target.generate(prompt, **settings))


def test_transformers_processors_are_shared_and_the_repetition_penalty_split():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper

    top_k = TopKLogitsWarper(5)
    penalty = RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=torch.tensor([2, 5]))
    rows = processors_for_rows(LogitsProcessorList([top_k, penalty]), 2)
    assert rows[0][0] is top_k and rows[1][0] is top_k
    assert rows[0][1].prompt_ignore_length.tolist() == [2] and rows[1][1].prompt_ignore_length.tolist() == [5]


def test_marked_classes_are_shared():
    @jetspec_hf.mark_row_safe
    class Harmless(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    criterion = Harmless()
    rows = criteria_for_rows(StoppingCriteriaList([criterion]), 3)
    assert all(own[0] is criterion and len(batch_level) == 0 for own, batch_level in rows)


lm_eval_utils = pytest.importorskip("lm_eval.models.utils_hf", reason="lm-evaluation-harness is not installed "
                                    "(pip install 'jetspec_hf[clients]')")


@pytest.mark.parametrize("batch_size", [2, 4])
def test_lm_eval_stop_sequences_stop_the_batch_where_plain_does(pair, batch_size):
    target, head = pair
    tokenizer = tiny_tokenizer()
    ids, mask = batch(seed=20, rows=batch_size)
    free = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=30, eos_token_id=None,
                           pad_token_id=0)
    # A one-character stop sequence every row reaches, at different steps: the batch stops once all have.
    continuations = [row[ids.shape[1]:].tolist() for row in free]
    common = [token for token in set.intersection(*map(set, continuations)) if token >= 3]  # not a special token
    assert common, "the tiny target's rows share no token to stop on"
    # The token every row reaches soonest (the batch stops when the last row reaches it).
    earliest = min(common, key=lambda token: max(row.index(token) for row in continuations))
    sequence = tokenizer.decode([earliest])
    for eos in (None, [1, int(free[1, ids.shape[1] + 9])]):
        def criteria():
            return lm_eval_utils.stop_sequences_criteria(tokenizer, [sequence, "~~"], ids.shape[1], batch_size)

        settings = dict(attention_mask=mask, do_sample=False, max_new_tokens=30, eos_token_id=eos, pad_token_id=0)
        plain = target.generate(ids, stopping_criteria=criteria(), **settings)
        got = target.generate(ids, stopping_criteria=criteria(), assistant_model=head, tree_budget=8, **settings)
        assert torch.equal(got, plain), f"eos {eos}"
        if eos is None:
            assert plain.shape[1] < ids.shape[1] + 30  # the stop sequence, not the length limit, ended it
