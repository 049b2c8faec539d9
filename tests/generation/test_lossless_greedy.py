"""Greedy tree decoding must give exactly the tokens of plain greedy `generate` (fp32, tiny random models)."""

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

import jetspec_hf
from jetspec_hf.bench.synthetic.timing import oracle_generation
from tiny_models import random_prompt, tiny_head, tiny_target, tiny_tokenizer

PROMPTS = [(seed, length) for seed, length in zip(range(6), (1, 2, 5, 9, 16, 33))]


def _pair(attn_implementation="sdpa", moe=False, causal=True):
    target = jetspec_hf.enable(tiny_target(attn_implementation=attn_implementation, moe=moe))
    return target, tiny_head(target, causal=causal)


@pytest.fixture(scope="module")
def dense_pair():
    return _pair()


@pytest.mark.parametrize("budget", [4, 16])
@pytest.mark.parametrize("max_new_tokens", [6, 25])
def test_greedy_equals_plain_when_drafts_are_accepted(dense_pair, budget, max_new_tokens):
    # A random head is almost always wrong, so equality alone would pass a loop that rejects every draft. Here the
    # drafts are planted with the target's own greedy continuation (the benchmarks' oracle), a few depths deep each
    # round, and the output must still be plain decoding's while most rounds accept several tokens.
    target, head = dense_pair
    for seed, length in PROMPTS[1:4]:
        prompt = random_prompt(seed, length)
        plain = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens)
        reference = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens + 20)
        got = oracle_generation(target, head, prompt, reference, budget, acceptance=[0.9, 0.8, 0.7],
                                max_new_tokens=max_new_tokens)
        assert torch.equal(got.sequences, plain)
        assert sum(got.accepted_lengths) / len(got.accepted_lengths) >= 2.0
        # Every round commits what was planted (its accepted draft tokens) plus the target's own token, except the
        # last, which stops at max_new_tokens.
        assert all(committed == min(planted, budget - 1) + 1
                   for committed, planted in zip(got.accepted_lengths[:-1], got.planted))


@pytest.mark.parametrize("budget", [1, 8, 64, "auto"])
@pytest.mark.parametrize("max_new_tokens", [1, 7, 24])
def test_greedy_equals_plain_on_prompts_budgets_and_lengths(dense_pair, budget, max_new_tokens):
    target, head = dense_pair
    for seed, length in PROMPTS:
        prompt = random_prompt(seed, length)
        expected = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens)
        got = target.generate(
            prompt, do_sample=False, max_new_tokens=max_new_tokens, assistant_model=head, tree_budget=budget
        )
        assert torch.equal(got, expected), f"prompt {seed} (length {length})"


@pytest.mark.parametrize(
    "attn_implementation, moe, causal",
    [("eager", False, True), ("sdpa", True, True), ("eager", True, False), ("sdpa", False, False)],
    ids=["eager-dense-causal", "sdpa-moe-causal", "eager-moe-bidirectional", "sdpa-dense-bidirectional"],
)
def test_greedy_equals_plain_across_backends_targets_and_head_masks(attn_implementation, moe, causal):
    target, head = _pair(attn_implementation, moe, causal)
    for seed, length in PROMPTS:
        prompt = random_prompt(seed, length)
        expected = target.generate(prompt, do_sample=False, max_new_tokens=20)
        for budget in (8, 64):
            got = target.generate(prompt, do_sample=False, max_new_tokens=20, assistant_model=head, tree_budget=budget)
            assert torch.equal(got, expected), f"prompt {seed}, budget {budget}"


def test_stops_at_eos_exactly_where_plain_stops(dense_pair):
    target, head = dense_pair
    for seed, length in PROMPTS:
        prompt = random_prompt(seed, length)
        free_run = target.generate(prompt, do_sample=False, max_new_tokens=20)[0, length:].tolist()
        # Make the 6th generated token the EOS: both paths must stop right after it, with every id listed.
        eos = [free_run[5], 1]
        expected = target.generate(prompt, do_sample=False, max_new_tokens=20, eos_token_id=eos)
        got = target.generate(
            prompt, do_sample=False, max_new_tokens=20, eos_token_id=eos, assistant_model=head, tree_budget=16
        )
        assert torch.equal(got, expected)
        assert got.shape[1] <= length + 6


def test_max_length_and_min_new_tokens_keep_their_meaning(dense_pair):
    target, head = dense_pair
    prompt = random_prompt(3, 9)
    expected = target.generate(prompt, do_sample=False, max_length=20)
    assert torch.equal(target.generate(prompt, do_sample=False, max_length=20, assistant_model=head), expected)
    free_run = target.generate(prompt, do_sample=False, max_new_tokens=12)[0, 9:].tolist()
    settings = dict(do_sample=False, max_new_tokens=12, min_new_tokens=8, eos_token_id=free_run[2])
    expected = target.generate(prompt, **settings)
    assert torch.equal(target.generate(prompt, assistant_model=head, **settings), expected)


class StopAfterToken(StoppingCriteria):
    """Stops once a given token has been generated (a criterion that can fire in the middle of a round)."""

    def __init__(self, token_id: int, prompt_length: int):
        self.token_id, self.prompt_length = token_id, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids[:, self.prompt_length :] == self.token_id).any(dim=1)


def test_custom_stopping_criterion_and_stop_strings(dense_pair):
    target, head = dense_pair
    tokenizer = tiny_tokenizer()
    for seed, length in PROMPTS[1:]:
        prompt = random_prompt(seed, length)
        free_run = target.generate(prompt, do_sample=False, max_new_tokens=16)[0, length:].tolist()
        criteria = StoppingCriteriaList([StopAfterToken(free_run[4], length)])
        expected = target.generate(prompt, do_sample=False, max_new_tokens=16, stopping_criteria=criteria)
        got = target.generate(
            prompt, do_sample=False, max_new_tokens=16, stopping_criteria=criteria, assistant_model=head
        )
        assert torch.equal(got, expected)

        stop = tokenizer.decode(free_run[6:8])
        kwargs = dict(do_sample=False, max_new_tokens=16, stop_strings=stop, tokenizer=tokenizer)
        expected = target.generate(prompt, **kwargs)
        assert torch.equal(target.generate(prompt, assistant_model=head, **kwargs), expected)
        assert expected.shape[1] <= length + 8


def test_attention_mask_and_left_padding(dense_pair):
    target, head = dense_pair
    prompt = random_prompt(4, 10)
    mask = torch.ones_like(prompt)
    expected = target.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=10)
    got = target.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=10, assistant_model=head)
    assert torch.equal(got, expected)

    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], dim=1)
    padded_mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), mask], dim=1)
    expected = target.generate(padded, attention_mask=padded_mask, do_sample=False, max_new_tokens=10)
    got = target.generate(
        padded, attention_mask=padded_mask, do_sample=False, max_new_tokens=10, assistant_model=head
    )
    assert torch.equal(got, expected)


def test_return_dict_carries_round_statistics_scores_and_logits(dense_pair):
    target, head = dense_pair
    prompt = random_prompt(2, 5)
    settings = dict(do_sample=False, max_new_tokens=15, return_dict_in_generate=True, output_scores=True,
                    output_logits=True, repetition_penalty=1.3)
    expected = target.generate(prompt, **settings)
    got = target.generate(prompt, assistant_model=head, tree_budget=8, **settings)
    assert isinstance(got, jetspec_hf.JetSpecGenerateOutput)
    assert torch.equal(got.sequences, expected.sequences)
    assert len(got.scores) == len(expected.scores) == 15
    for mine, plain in zip(got.scores, expected.scores):
        torch.testing.assert_close(mine, plain, rtol=1e-4, atol=1e-4)
    for mine, plain in zip(got.logits, expected.logits):
        torch.testing.assert_close(mine, plain, rtol=1e-4, atol=1e-4)
    # The first new token comes from the prefill's logits; every later one from a verify round.
    assert sum(got.accepted_lengths) == 14
    assert all(size <= 8 for size in got.tree_sizes) and len(got.tree_sizes) == len(got.accepted_lengths)
    assert got.tau == pytest.approx(14 / len(got.accepted_lengths))


@pytest.mark.parametrize(
    "processors",
    [
        dict(no_repeat_ngram_size=2),
        dict(bad_words_ids=[[7], [9, 10]], repetition_penalty=1.3),
        dict(min_new_tokens=6, eos_token_id=[1, 40, 41, 42]),
        dict(sequence_bias={(12,): 3.0}, renormalize_logits=True),
    ],
    ids=["no-repeat-ngram", "bad-words-repetition-penalty", "min-new-tokens", "sequence-bias"],
)
def test_greedy_with_prefix_dependent_processors(dense_pair, processors):
    # Each processor reads the prefix; at every tree node it must see that node's own path.
    target, head = dense_pair
    for seed, length in PROMPTS[1:4]:
        prompt = random_prompt(seed, length)
        expected = target.generate(prompt, do_sample=False, max_new_tokens=20, **processors)
        got = target.generate(prompt, do_sample=False, max_new_tokens=20, assistant_model=head, tree_budget=32,
                              **processors)
        assert torch.equal(got, expected), f"prompt {seed}"


def test_first_token_from_the_prefill_under_every_stopping_rule(dense_pair):
    # The first new token comes from the prefill's logits: every rule must be able to stop right there.
    target, head = dense_pair
    tokenizer = tiny_tokenizer()
    for seed, length in PROMPTS:
        prompt = random_prompt(seed, length)
        first = target.generate(prompt, do_sample=False, max_new_tokens=1)[0, -1].item()
        settings = [
            dict(max_new_tokens=1),
            dict(max_length=length + 1),
            dict(max_new_tokens=10, eos_token_id=first),
            dict(max_new_tokens=10, stopping_criteria=StoppingCriteriaList([StopAfterToken(first, length)])),
            dict(max_new_tokens=10, stop_strings=tokenizer.decode([first]), tokenizer=tokenizer),
        ]
        for kwargs in settings:
            expected = target.generate(prompt, do_sample=False, **kwargs)
            got = target.generate(prompt, do_sample=False, assistant_model=head, tree_budget=16, **kwargs)
            assert torch.equal(got, expected), (seed, kwargs)
            assert got.shape[1] == length + 1


def _repeating_prompt(seed, period, length):
    """A prompt that repeats a random pattern: its continuation tends to copy, which prompt lookup can guess."""
    pattern = random_prompt(seed, period)
    return pattern.repeat(1, length // period + 1)[:, :length]


@pytest.mark.parametrize("budget", [2, 8, 32, "auto"])
@pytest.mark.parametrize("lookup_tokens", [1, 4, 10])
def test_hybrid_tree_with_prompt_lookup_equals_plain(dense_pair, budget, lookup_tokens):
    target, head = dense_pair
    prompts = [random_prompt(seed, length) for seed, length in PROMPTS[1:4]]
    prompts += [_repeating_prompt(seed, period, 24) for seed, period in ((7, 3), (8, 5))]
    for prompt in prompts:
        for new_tokens in (1, 9, 30):
            expected = target.generate(prompt, do_sample=False, max_new_tokens=new_tokens)
            got = target.generate(prompt, do_sample=False, max_new_tokens=new_tokens, assistant_model=head,
                                  tree_budget=budget, prompt_lookup_num_tokens=lookup_tokens,
                                  return_dict_in_generate=True)
            assert torch.equal(got.sequences, expected)
            assert len(got.lookup_lengths) == len(got.accepted_lengths)


def test_hybrid_tree_stops_inside_accepted_lookup_chains(dense_pair):
    # The tiny random target falls into loops, where lookup chains get accepted; stop rules must then cut inside
    # them exactly where plain decoding stops.
    target, _ = dense_pair
    # A head with no opinion (uniform logits: its final norm is zeroed) leaves the budget to the lookup chains, so
    # the random target's loops get accepted through them.
    head = tiny_head(target)
    with torch.no_grad():
        head.norm.weight.zero_()
    tokenizer = tiny_tokenizer()
    checked = 0
    for seed in range(12):
        prompt = _repeating_prompt(seed, 2 + seed % 4, 30)
        length = prompt.shape[1]
        run = target.generate(prompt, do_sample=False, max_new_tokens=40, assistant_model=head, tree_budget=8,
                              prompt_lookup_num_tokens=8, return_dict_in_generate=True)
        generated = run.sequences[0, length:].tolist()
        start = length + 1  # the first new token comes from the prefill
        for committed, from_lookup in zip(run.accepted_lengths, run.lookup_lengths):
            if from_lookup >= 3:
                position = start + 1  # strictly inside the accepted chain
                new_tokens = position - length + 1
                token = generated[new_tokens - 1]
                settings = [dict(max_new_tokens=new_tokens),
                            dict(max_new_tokens=40, stop_strings=tokenizer.decode(generated[new_tokens - 2:new_tokens]),
                                 tokenizer=tokenizer)]
                if token not in generated[: new_tokens - 1]:
                    settings.append(dict(max_new_tokens=40, eos_token_id=token))
                for kwargs in settings:
                    expected = target.generate(prompt, do_sample=False, **kwargs)
                    got = target.generate(prompt, do_sample=False, assistant_model=head, tree_budget=8,
                                          prompt_lookup_num_tokens=8, **kwargs)
                    assert torch.equal(got, expected), (seed, kwargs)
                    checked += 1
                break
            start += committed
    assert checked >= 4
