"""`tree_budget="auto"`: the per-round choice under stubbed cost tables and stubbed head confidences, falling back
to plain rounds and growing again, and the policy inside `generate`."""

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

import jetspec_hf
from jetspec_hf.generation.budget import auto as auto_budget
from jetspec_hf.generation.budget.auto import (
    EXPLORING_SIZE,
    MAX_PROBE_WAIT,
    PROBE_SHARE,
    WARMUP_ROUNDS,
    AutoBudget,
    AutoBudgetState,
    auto_budget_policy,
)
from jetspec_hf.generation.budget.calibration import ConfidenceCalibration, TreeArrays, held_acceptance, path_probabilities
from jetspec_hf.generation.budget.costs import RoundCosts, VerifyCosts
from jetspec_hf.generation.settings import GenerateOptions
from jetspec_hf.generation.tree import DraftTree, build_tree, depth_candidates
from jetspec_hf.generation.settings import resolve_tree_settings
from tiny_models import random_prompt, tiny_head, tiny_target

NODES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PREFIXES = (64, 1024, 4096)
# A GPU-like verify: a 256-node tree costs a tenth more than one node, at every prefix length.
FLAT = VerifyCosts(NODES, PREFIXES, tuple(tuple(0.020 * (1 + n / 2560) * (1 + p / 40960) for n in NODES)
                                          for p in PREFIXES))
# A CPU-like verify: roughly linear in the node count beyond a few nodes, and in the prefix length.
STEEP = VerifyCosts(NODES, PREFIXES, tuple(tuple(0.005 * (1 + n / 12) * (1 + p / 1500) for n in NODES)
                                           for p in PREFIXES))
GREEDY_LIKE, SAMPLING_LIKE = (1.1, 0.6), (0.6, -1.5)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Simulation:
    """Rounds of the loop against a policy for a batch of `rows` sequences (one by default): the clock advances by
    the table's cost of rows × the widest tree (times `slowdown`), and the target accepts by the true calibration
    `truth` (an (a, b) of the calibration's model)."""

    def __init__(self, verify: VerifyCosts, draft_seconds=0.003, seed=0, slowdown=1.0, state=None, rows=1):
        self.clock = FakeClock()
        self.verify, self.draft_seconds, self.slowdown, self.rows = verify, draft_seconds, slowdown, rows
        self.state = state or AutoBudgetState(costs=RoundCosts(verify, draft_seconds),
                                              calibration=ConfidenceCalibration())
        self.drifts = []
        self.policy = AutoBudget(self.state, on_drift=lambda: self.drifts.append(len(self.sizes)), clock=self.clock)
        self.generator, self.rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
        self.sizes: list[int] = []
        self.round_sizes: list[list[int]] = []
        self.expected: list[list[float]] = []
        self.catch_up_seconds = 0.0

    def run(self, rounds: int, truth, sharpness: float, prefix_length: int = 200) -> list[int]:
        start, positions = len(self.sizes), [prefix_length] * self.rows
        for _ in range(rounds):
            if self.policy.wants_draft(positions):
                self.clock.now += self.draft_seconds + self.catch_up_seconds
                grown = [
                    build_tree(0, depth_candidates(torch.randn(15, 64, generator=self.generator) * sharpness, width=8),
                               self.policy.max_budget, 8)
                    for _ in range(self.rows)
                ]
                trees = [tree.truncated(size) for tree, size in zip(grown, self.policy.choose(grown, positions))]
            else:
                trees = [DraftTree.root_only(0) for _ in range(self.rows)]
            widest = max(map(len, trees))
            self.clock.now += self.slowdown * self.verify.seconds_at(widest * self.rows, prefix_length)
            accepted = []
            for tree in trees:
                arrays = TreeArrays.of(tree)
                chances = held_acceptance(path_probabilities(arrays, *truth) @ arrays.depth_one_hot)
                accepted.append(int((chances > self.rng.random()).sum()))
            self.expected.append(self.policy.observe(trees, accepted))
            self.round_sizes.append([len(tree) for tree in trees])
            self.sizes.append(widest)
        return self.sizes[start:]


def test_a_batch_decides_together_and_verifies_smaller_trees_where_rows_share_a_costly_verify():
    single = Simulation(STEEP, draft_seconds=0.001).run(200, GREEDY_LIKE, sharpness=3.0)[50:]
    batch = Simulation(STEEP, rows=8, draft_seconds=0.001)
    batched = batch.run(200, GREEDY_LIKE, sharpness=3.0)[50:]
    assert np.median(batched) < np.median(single)
    # Every row of a round verifies the batch's size (or all of a smaller tree), and drafts or not with the others.
    assert all(len(set(sizes)) == 1 for sizes in batch.round_sizes)
    assert all(len(expected) == 8 for expected in batch.expected)
    # Where the verify is nearly free, a batch still grows large trees, within what the table covers for 8 rows.
    flat = Simulation(FLAT, rows=8, draft_seconds=0.001).run(200, GREEDY_LIKE, sharpness=3.0)[50:]
    assert np.median(flat) == 256 // 8


def test_cheap_verify_chooses_large_trees_and_costly_verify_small_ones():
    # The same confident head on a GPU-like and a CPU-like table.
    sizes = {}
    for name, table in (("flat", FLAT), ("steep", STEEP)):
        simulation = Simulation(table, draft_seconds=0.001)
        sizes[name] = simulation.run(200, GREEDY_LIKE, sharpness=3.0)[50:]
    assert np.median(sizes["flat"]) >= 128
    assert 2 <= np.median(sizes["steep"]) <= 32


def test_trees_shrink_as_the_prefix_makes_verifies_costlier():
    simulation = Simulation(STEEP)
    short = simulation.run(150, GREEDY_LIKE, sharpness=3.0, prefix_length=64)[50:]
    long = simulation.run(150, GREEDY_LIKE, sharpness=3.0, prefix_length=4000)[50:]
    assert np.median(long) < np.median(short)


def test_choice_maximises_tokens_per_second_under_the_calibrated_expectation():
    simulation = Simulation(STEEP)
    policy, state = simulation.policy, simulation.state
    logits = torch.randn(15, 64, generator=torch.Generator().manual_seed(3)) * 3.0
    tree = build_tree(0, depth_candidates(logits, width=8), 64, 8)
    policy.wants_draft([500])
    [chosen] = policy.choose([tree], [500])
    arrays = TreeArrays.of(tree)
    rates = {n: (1 + state.calibration.expected_accepted(arrays, np.array([n]))[0])
             / state.costs.round_seconds_at(n, 500, drafted=True) for n in auto_budget.BUCKET_SIZES if n <= 64}
    assert chosen == max(rates, key=rates.get)


def test_falls_back_to_plain_rounds_when_drafts_do_not_pay_and_grows_again_when_they_do():
    simulation = Simulation(STEEP, draft_seconds=0.004)
    # Sampling-like: an unsure head whose tokens the target rarely takes.
    poor = simulation.run(600, SAMPLING_LIKE, sharpness=0.5)
    # The first rounds draft (and verify a few nodes) whatever the prior says, to calibrate it.
    assert all(size >= EXPLORING_SIZE for size in poor[:WARMUP_ROUNDS])
    settled = poor[100:]
    assert sum(size == 1 for size in settled) >= 0.95 * len(settled)
    # It keeps probing, less and less often, until the probes take about PROBE_SHARE of the time.
    probes = [index for index, size in enumerate(poor) if size > 1 and index >= WARMUP_ROUNDS]
    gaps = np.diff(probes)
    assert len(probes) >= 4 and gaps[-1] > 4 * gaps[0] and gaps.max() <= MAX_PROBE_WAIT
    late_probes = sum(index >= 200 for index in probes)
    # What a probe costs beyond the plain round it replaces (a probe verifies 4 to 8 nodes).
    probe_seconds = late_probes * (simulation.draft_seconds + STEEP.seconds_at(8, 200) - STEEP.seconds_at(1, 200))
    assert 0 < probe_seconds < 2 * PROBE_SHARE * (len(poor) - 200) * STEEP.seconds_at(1, 200)
    # The text turns predictable: the next probe pays, the calibration catches up, drafting resumes and stays.
    good = simulation.run(300, GREEDY_LIKE, sharpness=3.0)
    first_drafted = next(index for index, size in enumerate(good) if size > 1)
    assert first_drafted <= gaps.max()
    later = good[first_drafted + 20:]
    assert sum(size > 1 for size in later) >= 0.9 * len(later)
    assert np.median(later) >= 4


def test_expensive_probes_are_spaced_out():
    simulation = Simulation(STEEP, draft_seconds=0.004)
    simulation.run(100, SAMPLING_LIKE, sharpness=0.5)
    # From here every probe also catches the head's context up at the cost of 40 plain rounds.
    simulation.catch_up_seconds = 40 * STEEP.seconds_at(1, 200)
    later = simulation.run(2500, SAMPLING_LIKE, sharpness=0.5)
    probes = [index for index, size in enumerate(later) if size > 1]
    # Not 40 plain rounds' worth every MAX_PROBE_INTERVAL rounds: probes wait until they are affordable (here
    # longer than MAX_PROBE_WAIT, the longest wait).
    assert len(probes) >= 2 and np.diff(probes).min() >= MAX_PROBE_WAIT


def test_a_table_the_rounds_disagree_with_is_measured_again():
    slow = Simulation(STEEP, slowdown=3.0)
    slow.run(100, GREEDY_LIKE, sharpness=3.0)
    assert len(slow.drifts) == 1 and slow.drifts[0] >= auto_budget.DRIFT_ROUNDS
    steady = Simulation(STEEP, slowdown=1.3)
    steady.run(100, GREEDY_LIKE, sharpness=3.0)
    assert not steady.drifts


def test_no_tree_at_all_when_even_two_nodes_cannot_pay():
    # A measurement that stopped at one node: every round is a plain one and no head forward runs.
    lone = VerifyCosts((1,), (64,), ((0.01,),))
    policy = AutoBudget(AutoBudgetState(costs=RoundCosts(lone, 0.003), calibration=ConfidenceCalibration()))
    assert policy.max_budget == 1 and not policy.wants_draft([100])


def test_what_one_call_learnt_carries_to_the_next(monkeypatch):
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    settings = resolve_tree_settings(head, {"tree_budget": "auto"})
    greedy = GenerateOptions({}, {}, None, target.generation_config)
    first = auto_budget_policy(target, head, greedy, settings, torch.device("cpu"))
    simulation = Simulation(first.state.costs.verify, state=first.state)
    simulation.policy = first
    first._clock = simulation.clock
    simulation.run(30, GREEDY_LIKE, sharpness=3.0)
    second = auto_budget_policy(target, head, greedy, settings, torch.device("cpu"))
    assert second.state.calibration.rounds == first.state.calibration.rounds > 0
    assert second.state is not first.state  # each call works on its own copy
    # Other decoding settings learn apart.
    sampling = GenerateOptions({"do_sample": True, "temperature": 0.7}, {}, None, target.generation_config)
    assert auto_budget_policy(target, head, sampling, settings, torch.device("cpu")).state.calibration.rounds == 0


def test_decoding_settings_resolve_as_the_call_does():
    # A passed config that leaves sampling unset samples as the target's own config says, as `generate` merges them.
    settings = resolve_tree_settings(tiny_head(tiny_target()), {"tree_budget": "auto"})
    target_config = GenerationConfig(do_sample=True, temperature=0.6)
    passed = GenerateOptions({}, {}, GenerationConfig(max_new_tokens=8), target_config)
    as_kwargs = GenerateOptions({"max_new_tokens": 8}, {}, None, target_config)
    assert auto_budget._decoding_key(passed, settings) == auto_budget._decoding_key(as_kwargs, settings)
    assert auto_budget._decoding_key(passed, settings)[:3] == ("sample", None, 0.6)
    greedy = GenerateOptions({"do_sample": False}, {}, None, target_config)
    assert auto_budget._decoding_key(greedy, settings)[0] == "greedy"


@pytest.mark.parametrize("max_new_tokens", [1, 9, 40])
def test_auto_greedy_output_equals_plain_and_reports_what_it_saw(pair, max_new_tokens):
    target, head = pair
    for seed, length in ((0, 3), (1, 17)):
        prompt = random_prompt(seed, length)
        expected = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens)
        got = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens, assistant_model=head,
                              tree_budget="auto", return_dict_in_generate=True)
        assert torch.equal(got.sequences, expected)
        rounds = len(got.accepted_lengths)
        assert len(got.tree_sizes) == len(got.expected_accepted) == rounds
        assert all(size <= 256 for size in got.tree_sizes)
        assert all(expected == 0.0 for size, expected in zip(got.tree_sizes, got.expected_accepted) if size == 1)


def test_fixed_budgets_report_no_expectations(pair):
    target, head = pair
    got = target.generate(random_prompt(0, 5), do_sample=False, max_new_tokens=8, assistant_model=head,
                          tree_budget=8, return_dict_in_generate=True)
    assert got.expected_accepted is None


def test_a_batch_with_auto_gives_every_row_its_plain_tokens(pair):
    target, head = pair
    prompts = [random_prompt(seed, length)[0] for seed, length in ((0, 3), (1, 17), (2, 9), (3, 12))]
    width = max(map(len, prompts))
    pad = target.generation_config.pad_token_id or 0
    ids = torch.stack([torch.cat([torch.full((width - len(p),), pad), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p))]).long() for p in prompts])
    expected = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=30)
    got = target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=30, assistant_model=head,
                          return_dict_in_generate=True)  # the package default budget: "auto"
    assert torch.equal(got.sequences, expected)
    for row_sizes, row_expected in zip(got.tree_sizes, got.expected_accepted):
        assert len(row_sizes) == len(row_expected)
