"""Timing the verify forward and the draft: real forwards on scratch state that leave the target as it was, kept
once per process and, when asked, on disk."""

import json
import threading

import pytest
import torch

import jetspec_hf
from jetspec_hf.generation.budget import measurement as cost_measurement
from jetspec_hf.generation.budget.measurement import (
    COST_CACHE_ENV,
    forget_verify_costs,
    measure_draft_seconds,
    measure_verify_costs,
    remember_verify_costs,
    verify_costs_for,
)
from jetspec_hf.generation.budget.costs import MEASURED_NODE_COUNTS, VerifyCosts
from tiny_models import random_prompt, tiny_head, tiny_target

CPU = torch.device("cpu")
QUICK = dict(node_counts=(1, 2, 4, 8), prefix_lengths=(8, 64), repeats=1)


def snapshot(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def hook_count(model):
    return sum(len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.modules())


@pytest.fixture
def fresh_tables(monkeypatch, tmp_path):
    """An empty process table store, and no disk cache unless the test sets one."""
    monkeypatch.setattr(cost_measurement, "_VERIFY_COSTS", {})
    monkeypatch.delenv(COST_CACHE_ENV, raising=False)
    return tmp_path


@pytest.mark.real_cost_measurement
def test_measurement_times_every_size_and_leaves_the_target_as_it_was():
    target = jetspec_hf.enable(tiny_target())
    weights, config, hooks = snapshot(target), target.config.to_dict(), hook_count(target)
    rng_state = torch.get_rng_state()
    # Every default node count, up to trees larger than the tiny vocabulary.
    costs = measure_verify_costs(target, [1, 3], CPU, max_tokens_per_round=1000, prefix_lengths=(8, 64), repeats=1)
    assert costs.node_counts == MEASURED_NODE_COUNTS and costs.prefix_lengths == (8, 64)
    assert all(seconds > 0 for row in costs.seconds for seconds in row)
    assert all(torch.equal(weights[name], tensor) for name, tensor in target.state_dict().items())
    assert target.config.to_dict() == config and hook_count(target) == hooks
    # No random draw: a seeded sampling run after the measurement is the run it would have been.
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert target.training is False


@pytest.mark.real_cost_measurement
def test_trees_that_can_never_pay_are_not_timed(monkeypatch):
    target = jetspec_hf.enable(tiny_target())
    # Verify time proportional to the tree (a fixed clock: what is timed must not depend on this machine's load).
    timed = []

    def proportional(target, tree, *args):
        timed.append(len(tree))
        return 0.001 * len(tree)

    monkeypatch.setattr(cost_measurement, "_timed_verify", proportional)
    # A round that commits at most 8 tokens never pays for a tree that costs more than 8 one-node verifies: the
    # 16-node tree is the first beyond that, and nothing larger is timed.
    costs = measure_verify_costs(target, [1], CPU, max_tokens_per_round=8, node_counts=(1, 4, 16, 64, 256),
                                 prefix_lengths=(8,), repeats=1)
    assert costs.node_counts == (1, 4, 16)
    assert max(timed) == 16


@pytest.mark.real_cost_measurement
def test_measurement_stays_below_the_positions_that_rewrite_dynamic_rope_tables():
    target = jetspec_hf.enable(tiny_target(rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                            "rope_theta": 10000.0}))
    inverse_frequencies = target.model.rotary_emb.inv_freq.clone()
    costs = measure_verify_costs(target, [1], CPU, max_tokens_per_round=1000, node_counts=(1, 2, 4),
                                 prefix_lengths=(8, 64, 4096), repeats=1)
    assert costs.prefix_lengths == (8, 64)  # max_position_embeddings is 512
    assert torch.equal(target.model.rotary_emb.inv_freq, inverse_frequencies)


@pytest.mark.real_cost_measurement
def test_draft_timing_leaves_the_head_as_it_was():
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    weights = snapshot(head)
    assert measure_draft_seconds(head, target, CPU, repeats=1) > 0
    assert all(torch.equal(weights[name], tensor) for name, tensor in head.state_dict().items())


@pytest.mark.real_cost_measurement
def test_measuring_does_not_disturb_a_plain_generate_in_another_thread():
    target = jetspec_hf.enable(tiny_target())
    prompts = [random_prompt(seed, 12) for seed in range(4)]
    expected = [target.generate(prompt, do_sample=False, max_new_tokens=24) for prompt in prompts]
    got, failures = [], []

    def plain_generation():
        try:
            for _ in range(3):
                got.extend(target.generate(prompt, do_sample=False, max_new_tokens=24) for prompt in prompts)
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    worker = threading.Thread(target=plain_generation)
    worker.start()
    measure_verify_costs(target, [1, 3], CPU, max_tokens_per_round=1000, **QUICK)
    worker.join()
    assert not failures
    assert all(torch.equal(output, expected[index % len(prompts)]) for index, output in enumerate(got))


def counting_measurement(monkeypatch):
    calls = []

    def measure(target, *args, **kwargs):
        calls.append(target)
        return VerifyCosts((1, 2), (64,), ((0.01, 0.02),))

    monkeypatch.setattr(cost_measurement, "measure_verify_costs", measure)
    return calls


def test_costs_are_measured_once_per_target_shape_device_and_dtype(monkeypatch, fresh_tables):
    calls = counting_measurement(monkeypatch)
    first, twin = tiny_target(), tiny_target(seed=5)  # other weights, same shapes
    table = verify_costs_for(first, [1], CPU, 16)
    assert verify_costs_for(first, [1], CPU, 16) is table
    assert verify_costs_for(twin, [1], CPU, 16) is table
    assert len(calls) == 1
    verify_costs_for(tiny_target().to(torch.float64), [1], CPU, 16)
    verify_costs_for(tiny_target(attention_bias=True), [1], CPU, 16)
    assert len(calls) == 3


def test_a_cpu_measurement_says_why_the_first_call_is_slow(monkeypatch, fresh_tables, caplog):
    counting_measurement(monkeypatch)
    target = tiny_target()

    def said() -> int:
        return sum("verify forward once per process" in record.getMessage() for record in caplog.records)

    with caplog.at_level("WARNING"):
        verify_costs_for(target, [1], CPU, 16)
        assert said() == 1
        verify_costs_for(target, [1], CPU, 16)  # kept: nothing is measured, nothing said
        assert said() == 1


def test_disk_cache_skips_the_measurement_in_a_later_process(monkeypatch, fresh_tables):
    calls = counting_measurement(monkeypatch)
    monkeypatch.setenv(COST_CACHE_ENV, str(fresh_tables))
    target = tiny_target()
    table = verify_costs_for(target, [1], CPU, 16)
    files = list(fresh_tables.glob("verify-costs-*.json"))
    assert len(files) == 1 and len(calls) == 1
    monkeypatch.setattr(cost_measurement, "_VERIFY_COSTS", {})  # a new process
    assert verify_costs_for(target, [1], CPU, 16) == table
    assert len(calls) == 1
    # A file written for other software (or anything else) is not used.
    data = json.loads(files[0].read_text())
    data["signature"]["torch"] = "0.0"
    files[0].write_text(json.dumps(data))
    monkeypatch.setattr(cost_measurement, "_VERIFY_COSTS", {})
    verify_costs_for(target, [1], CPU, 16)
    assert len(calls) == 2


def test_an_unreadable_disk_table_is_measured_again(monkeypatch, fresh_tables, caplog):
    calls = counting_measurement(monkeypatch)
    monkeypatch.setenv(COST_CACHE_ENV, str(fresh_tables))
    target = tiny_target()
    verify_costs_for(target, [1], CPU, 16)
    next(fresh_tables.glob("verify-costs-*.json")).write_text("{not json")
    monkeypatch.setattr(cost_measurement, "_VERIFY_COSTS", {})
    verify_costs_for(target, [1], CPU, 16)
    assert len(calls) == 2


def test_forgotten_costs_are_measured_again(monkeypatch, fresh_tables):
    calls = counting_measurement(monkeypatch)
    monkeypatch.setenv(COST_CACHE_ENV, str(fresh_tables))
    target = tiny_target()
    verify_costs_for(target, [1], CPU, 16)
    forget_verify_costs(target, CPU)
    assert not list(fresh_tables.glob("verify-costs-*.json"))
    verify_costs_for(target, [1], CPU, 16)
    assert len(calls) == 2


def test_a_remembered_table_replaces_the_measurement(monkeypatch, fresh_tables):
    calls = counting_measurement(monkeypatch)
    target = tiny_target()
    table = VerifyCosts((1, 4), (64,), ((0.5, 0.6),))
    remember_verify_costs(target, CPU, table)
    assert verify_costs_for(target, [1], CPU, 16) is table and not calls


@pytest.mark.real_cost_measurement
def test_a_prefix_that_does_not_fit_in_memory_ends_the_measurement(monkeypatch):
    target = jetspec_hf.enable(tiny_target())
    lengthen = cost_measurement._lengthen

    def out_of_memory_beyond_8(cache, length):
        if length > 8:
            raise torch.OutOfMemoryError("scratch cache too large")
        lengthen(cache, length)

    monkeypatch.setattr(cost_measurement, "_lengthen", out_of_memory_beyond_8)
    costs = measure_verify_costs(target, [1], CPU, max_tokens_per_round=1000, **QUICK)
    assert costs.prefix_lengths == (8,) and len(costs.seconds) == 1
