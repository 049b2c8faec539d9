"""The verify cost table (interpolation, noise, round trip) and the round costs learnt online."""

import numpy as np
import pytest

from jetspec_hf.generation.budget.costs import RoundCosts, VerifyCosts

NODES = (1, 2, 4, 8, 16)


def linear_table(prefixes=(64, 1024), base=0.005, per_node=0.001, per_position=1e-6) -> VerifyCosts:
    """seconds = base + per_node * nodes + per_position * prefix: what the interpolation must reproduce."""
    return VerifyCosts(NODES, prefixes, tuple(tuple(base + per_node * n + per_position * p for n in NODES)
                                              for p in prefixes))


def test_costs_interpolate_between_node_counts_and_prefix_lengths():
    table = linear_table()
    sizes = np.array([1, 3, 6, 12, 16])
    for prefix in (64, 300, 1024):
        assert table.at(sizes, prefix) == pytest.approx(0.005 + 0.001 * sizes + 1e-6 * prefix)


def test_costs_beyond_the_longest_prefix_keep_growing_at_the_last_slope():
    table = linear_table()
    assert table.at(np.array([4]), 3000)[0] == pytest.approx(0.005 + 0.004 + 0.003)
    # Below the shortest prefix: the shortest's costs.
    assert table.at(np.array([4]), 0)[0] == pytest.approx(table.at(np.array([4]), 64)[0])


def test_scalar_lookup_equals_the_vector_one():
    table = VerifyCosts(NODES, (64, 1024, 4096), ((5, 6, 6.5, 8, 12), (6, 7, 8, 10, 15), (9, 11, 13, 17, 30)))
    for nodes in (1, 2, 3, 5, 8, 11, 16, 40):
        for prefix in (0, 64, 500, 1024, 2000, 4096, 9000):
            assert table.seconds_at(nodes, prefix) == pytest.approx(table.at(np.array([nodes]), prefix)[0])


def test_timing_noise_cannot_make_a_larger_tree_or_a_longer_prefix_cheaper():
    # A spike at 4 nodes (another job took the CPU) and one at the short prefix's 16 nodes.
    table = VerifyCosts(NODES, (64, 1024), ((5, 6, 20, 8, 30), (6, 7, 8, 10, 12)))
    assert table.at(np.array(NODES), 64).tolist() == [5, 6, 8, 8, 12]
    assert (np.diff(table.at(np.array(NODES), 1024)) >= 0).all()


def test_table_round_trips_and_refuses_nonsense():
    table = linear_table()
    assert VerifyCosts.from_dict(table.to_dict()) == table
    with pytest.raises(ValueError, match="node_counts"):
        VerifyCosts((2, 4), (64,), ((1.0, 2.0),))
    with pytest.raises(ValueError, match="positive"):
        VerifyCosts((1, 2), (64,), ((1.0, 0.0),))
    with pytest.raises(ValueError, match="prefix_lengths"):
        VerifyCosts((1, 2), (64, 64), ((1.0, 2.0), (1.0, 2.0)))


def test_round_costs_start_from_the_measurement():
    costs = RoundCosts(linear_table(), draft_seconds=0.003)
    sizes = np.array([1, 8])
    assert costs.round_seconds(sizes, 64, drafted=False) == pytest.approx(linear_table().at(sizes, 64))
    assert costs.round_seconds(sizes, 64, drafted=True) == pytest.approx(linear_table().at(sizes, 64) + 0.003)
    assert costs.round_seconds_at(8, 64, drafted=True) == pytest.approx(costs.round_seconds(sizes, 64, True)[1])


def test_round_costs_learn_drift_overhead_and_draft_from_the_rounds():
    table = linear_table()
    costs = RoundCosts(table, draft_seconds=0.003)
    rng = np.random.default_rng(0)
    for round_index in range(200):
        nodes = int(rng.choice(NODES))
        # The machine runs verifies 1.3 times slower than measured, with 0.5 ms of loop around each, and a 2 ms
        # draft on drafted rounds.
        after_draft = 1.3 * table.seconds_at(nodes, 64) + 0.0005
        costs.record(nodes, 64, after_draft, draft_seconds=0.002 if round_index % 2 else None)
    assert costs.scale == pytest.approx(1.3, rel=0.05)
    assert costs.overhead == pytest.approx(0.0005, abs=0.0002)
    assert costs.draft == pytest.approx(0.002, rel=0.01)
    assert costs.rounds == 200


def test_round_costs_stay_defined_when_every_round_has_one_size():
    table = linear_table()
    costs = RoundCosts(table, draft_seconds=0.003)
    for _ in range(100):
        costs.record(1, 64, 1.1 * table.seconds_at(1, 64), draft_seconds=None)
    # The prior's lever arm keeps the line defined: a one-node round is predicted as measured.
    assert np.isfinite(costs.scale) and costs.round_seconds_at(1, 64, False) == pytest.approx(
        1.1 * table.seconds_at(1, 64), rel=0.02)
