"""The returned cache holds exactly plain decoding's rows, and chats continue from it on either path."""

import copy
import logging

import pytest
import torch
from transformers.cache_utils import DynamicCache

from tiny_models import random_prompt

TURN_TOKENS = [9, 6, 11]  # new tokens generated per turn


def _generate(target, head, ids, cache, new_tokens, tree):
    extra = dict(assistant_model=head, tree_budget=16) if tree else {}
    return target.generate(
        ids, cache=cache, do_sample=False, max_new_tokens=new_tokens, return_dict_in_generate=True, **extra
    )


@pytest.mark.parametrize("max_new_tokens", [1, 5, 17])
def test_returned_cache_equals_plain_decodings(pair, max_new_tokens):
    target, head = pair
    prompt = random_prompt(3, 7)
    plain = _generate(target, head, prompt, None, max_new_tokens, tree=False)
    tree = _generate(target, head, prompt, None, max_new_tokens, tree=True)
    assert torch.equal(tree.sequences, plain.sequences)
    # Every committed token but the last: no rejected tree rows, nothing missing.
    assert tree.cache.get_seq_length() == plain.cache.get_seq_length() == plain.sequences.shape[1] - 1
    for mine, expected in zip(tree.cache.layers, plain.cache.layers):
        torch.testing.assert_close(mine.keys, expected.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(mine.values, expected.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "paths",
    [("tree", "tree", "tree"), ("tree", "plain", "tree"), ("plain", "tree", "plain"), ("plain", "tree", "tree")],
    ids=lambda paths: "-".join(paths),
)
def test_three_turn_chat_from_returned_caches_equals_fresh_runs(pair, paths):
    target, head = pair
    turns = [random_prompt(10 + turn, length) for turn, length in enumerate((6, 3, 4))]
    sequence, cache = None, None
    for turn, (user_tokens, path, new_tokens) in enumerate(zip(turns, paths, TURN_TOKENS)):
        ids = user_tokens if sequence is None else torch.cat([sequence, user_tokens], dim=1)
        fresh = target.generate(ids, do_sample=False, max_new_tokens=new_tokens)
        out = _generate(target, head, ids, cache, new_tokens, tree=path == "tree")
        assert torch.equal(out.sequences, fresh), f"turn {turn + 1} ({path})"
        assert out.cache.get_seq_length() == out.sequences.shape[1] - 1
        sequence, cache = out.sequences, out.cache


def test_a_tree_call_continues_the_head_context_of_the_previous_one(pair):
    target, head = pair
    first = _generate(target, head, random_prompt(20, 8), None, 10, tree=True)
    context = first.cache._jetspec_draft_context
    assert context.belongs_to(head) and len(context.tokens) == first.cache.get_seq_length()
    follow_up = torch.cat([first.sequences, random_prompt(21, 3)], dim=1)
    second = _generate(target, head, follow_up, first.cache, 6, tree=True)
    assert torch.equal(second.sequences, target.generate(follow_up, do_sample=False, max_new_tokens=6))
    # The head's own cache went on growing instead of starting over from the new tokens.
    assert second.cache._jetspec_draft_context.state is context.state
    assert context.state.length > 8


def test_a_cache_without_head_context_continues_with_a_warning(pair, caplog):
    target, head = pair
    prompt = random_prompt(30, 9)
    cache = DynamicCache(config=target.config)
    with torch.no_grad():
        target(prompt[:, :6], cache=cache, use_cache=True)
    logging.Logger.warning_once.cache_clear()  # said once per process: make this test independent of the others
    with caplog.at_level("WARNING"):
        out = _generate(target, head, prompt, cache, 8, tree=True)
    assert "carries no draft-head context" in caplog.text
    assert torch.equal(out.sequences, target.generate(prompt, do_sample=False, max_new_tokens=8))


def test_a_cache_from_another_sequence_or_too_long_is_refused(pair):
    target, head = pair
    first = _generate(target, head, random_prompt(40, 8), None, 5, tree=True)
    other = torch.cat([random_prompt(41, 13), random_prompt(42, 2)], dim=1)
    with pytest.raises(ValueError, match="another sequence"):
        _generate(target, head, other, first.cache, 4, tree=True)
    with pytest.raises(ValueError, match="already holds"):
        _generate(target, head, first.sequences[:, :5], first.cache, 4, tree=True)


def test_a_copied_cache_branches_the_chat_with_the_head_context_and_a_pickled_one_without(pair, tmp_path):
    target, head = pair
    first = _generate(target, head, random_prompt(50, 7), None, 8, tree=True)
    branch = copy.deepcopy(first.cache)
    assert branch._jetspec_draft_context.belongs_to(head)
    assert branch._jetspec_draft_context.state is not first.cache._jetspec_draft_context.state
    follow_ups = [torch.cat([first.sequences, random_prompt(seed, 3)], dim=1) for seed in (51, 52)]
    for follow_up, cache in zip(follow_ups, (first.cache, branch)):
        got = _generate(target, head, follow_up, cache, 5, tree=True)
        assert torch.equal(got.sequences, target.generate(follow_up, do_sample=False, max_new_tokens=5))
    path = tmp_path / "cache.pt"
    torch.save(first.cache, path)
    assert not torch.load(path, weights_only=False)._jetspec_draft_context.belongs_to(head)
