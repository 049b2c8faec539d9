"""Host synchronisations per round of greedy tree decoding: at most 2 with no prefix-dependent processors.

On a GPU each read of a tensor's value by Python waits for the device. On a CPU the reads cost nothing, but they
are the same calls, so counting them here holds the loop to its count (jetspec_hf/bench/synthetic/host_syncs.py).
"""

import pytest
import torch
from transformers import StoppingCriteriaList
from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

from jetspec_hf.bench.synthetic.host_syncs import HOST_READ_METHODS, HostReadCounter, RoundSyncCounter
from jetspec_hf.bench.synthetic.oracle import acceptance_for_tau
from jetspec_hf.bench.synthetic.timing import oracle_generation, plain_generation
from jetspec_hf.generation.stopping import tokens_before_stop
from tiny_models import EOS_TOKEN_ID, enabled_pair, random_prompt

MAX_SYNCS_PER_ROUND = 2


@pytest.fixture(scope="module")
def pair():
    return enabled_pair(block_size=16)


def _reads_per_round(generate) -> list[int]:
    with HostReadCounter() as reads:
        rounds = RoundSyncCounter(reads)
        generate(rounds)
    assert rounds.rounds == len(rounds.per_round) > 0
    return rounds.per_round


@pytest.mark.parametrize("budget", [2, 16, 64])
def test_greedy_rounds_read_the_device_at_most_twice(pair, budget):
    target, head = pair
    prompt = random_prompt(0, 12)
    # The target's generation config has an EOS id, so the EOS criterion is part of every round's stop check.
    per_round = _reads_per_round(lambda rounds: target.generate(
        prompt, do_sample=False, max_new_tokens=30, assistant_model=head, tree_budget=budget, round_profiler=rounds
    ))
    # The two reads: the head's top candidates per depth (to grow the tree), the target's choice per node (the walk).
    assert max(per_round) <= MAX_SYNCS_PER_ROUND, per_round
    assert min(per_round) >= 1


def test_rounds_that_accept_long_paths_read_no_more(pair):
    """Forced long acceptances (oracle drafter): the cache moves and the head's context grows by several rows per
    round, still without a read."""
    target, head = pair
    prompt = random_prompt(1, 12)
    reference = plain_generation(target, prompt, 48).sequences
    per_round = _reads_per_round(lambda rounds: oracle_generation(
        target, head, prompt, reference, 64, [acceptance_for_tau(6, 15)], 48, round_profiler=rounds
    ))
    assert len(per_round) < 20  # the rounds did accept long paths
    assert max(per_round) <= MAX_SYNCS_PER_ROUND, per_round


def test_the_counter_sees_every_read_method_and_puts_them_back():
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_READ_METHODS}
    tensor = torch.tensor([3.0])
    with HostReadCounter() as reads:
        tensor.item(), tensor.tolist(), tensor.cpu(), tensor.numpy(), bool(tensor), int(tensor), float(tensor)
        [0, 1, 2, 3][torch.tensor(1)]
    assert reads.count == len(HOST_READ_METHODS)
    assert {name for name, _ in reads.sites} == set(HOST_READ_METHODS)
    assert {name: torch.Tensor.__dict__.get(name) for name in HOST_READ_METHODS} == saved
    tensor.item()
    assert reads.count == len(HOST_READ_METHODS)  # no longer counting


def test_rounds_are_split_at_each_draft_stage_and_closed_at_the_end():
    class Count:
        count = 0

    counter = Count()
    rounds = RoundSyncCounter(counter)
    with rounds.generation(torch.device("cpu")):
        counter.count += 5  # the prefill: not a round
        for reads in (2, 3, 1):
            with rounds.stage("draft", torch.device("cpu")):
                counter.count += 1
            counter.count += reads - 1
    assert rounds.per_round == [2, 3, 1]


def test_the_eos_stop_check_reads_the_eos_ids_once_per_criterion():
    criteria = StoppingCriteriaList([MaxLengthCriteria(max_length=50), EosTokenCriteria(eos_token_id=[EOS_TOKEN_ID])])
    input_ids = torch.tensor([[5, 6, 7]])
    with HostReadCounter() as reads:
        for _ in range(5):
            assert tokens_before_stop([4, EOS_TOKEN_ID, 9], input_ids, criteria) == (2, True)
    assert reads.count == 1
    # A replaced EOS tensor is read again.
    criteria[1].eos_token_id = torch.tensor([9])
    with HostReadCounter() as reads:
        assert tokens_before_stop([4, EOS_TOKEN_ID, 9], input_ids, criteria) == (3, True)
    assert reads.count == 1
