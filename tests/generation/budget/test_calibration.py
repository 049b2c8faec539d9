"""The online calibration of the head's confidence: expectations from path probabilities, and the fit to a stream
of accepted lengths."""

import numpy as np
import pytest
import torch

from jetspec_hf.generation.budget.calibration import ConfidenceCalibration, TreeArrays, held_acceptance, path_probabilities
from jetspec_hf.generation.tree import DraftTree, build_tree, depth_candidates


def random_tree(generator: torch.Generator, budget: int = 32, sharpness: float = 3.0) -> DraftTree:
    """A node-level tree from random per-depth head logits (larger `sharpness`: a more confident head)."""
    logits = torch.randn(6, 40, generator=generator) * sharpness
    return build_tree(0, depth_candidates(logits, width=4), budget=budget, width=4)


def true_expectation(tree: TreeArrays, slope: float, offset: float) -> float:
    by_depth = path_probabilities(tree, slope, offset) @ tree.depth_one_hot
    return float(held_acceptance(by_depth).sum())


def draw_accepted(tree: TreeArrays, slope: float, offset: float, rng: np.random.Generator) -> int:
    """An accepted length whose law is P(L >= d) = the held chances under the true (slope, offset)."""
    chances = held_acceptance(path_probabilities(tree, slope, offset) @ tree.depth_one_hot)
    return int((chances > rng.random()).sum())


def run_stream(calibration, slope, offset, rounds, seed, sharpness=3.0):
    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    for _ in range(rounds):
        tree = TreeArrays.of(random_tree(generator, sharpness=sharpness))
        calibration.observe(tree, draw_accepted(tree, slope, offset, rng))


def prediction_error(calibration, slope, offset, seed=99, trees=200):
    """Mean absolute error of the calibrated expectation on fresh trees, and the mean true expectation."""
    generator = torch.Generator().manual_seed(seed)
    errors, truths = [], []
    for _ in range(trees):
        tree = TreeArrays.of(random_tree(generator))
        truth = true_expectation(tree, slope, offset)
        errors.append(abs(calibration.expected_accepted(tree, np.array([len(tree)]))[0] - truth))
        truths.append(truth)
    return float(np.mean(errors)), float(np.mean(truths))


def test_expectation_is_the_sum_of_path_probabilities_when_nothing_is_held():
    # Two children of the root with probabilities 0.3 and 0.2, a grandchild under the first with 0.3 * 0.5.
    tree = DraftTree(tokens=[0, 1, 2, 3], parents=[-1, 0, 0, 1], depths=[0, 1, 1, 2],
                     scores=[0.0, np.log(0.3), np.log(0.2), np.log(0.15)])
    calibration = ConfidenceCalibration()  # the prior: the head's own probabilities
    expected = calibration.expected_accepted(TreeArrays.of(tree), np.array([1, 2, 3, 4]))
    assert expected == pytest.approx([0.0, 0.3, 0.5, 0.65])


def test_chances_are_held_to_one_and_never_rise_with_depth():
    # Overconfident siblings (0.9 + 0.8 > 1) and a deeper level whose sum would exceed the level above.
    tree = DraftTree(tokens=[0, 1, 2, 3, 4], parents=[-1, 0, 0, 1, 2], depths=[0, 1, 1, 2, 2],
                     scores=[0.0, np.log(0.9), np.log(0.8), np.log(0.85), np.log(0.75)])
    arrays = TreeArrays.of(tree)
    chances = held_acceptance(path_probabilities(arrays, 1.0, 0.0) @ arrays.depth_one_hot)
    assert chances.tolist() == [1.0, 1.0]
    calibration = ConfidenceCalibration()
    assert calibration.expected_accepted(arrays, np.array([5]))[0] == pytest.approx(2.0)


def test_expectations_of_nested_prefixes_grow_with_the_size():
    tree = TreeArrays.of(random_tree(torch.Generator().manual_seed(3), budget=64))
    sizes = np.arange(1, len(tree) + 1)
    expected = ConfidenceCalibration().expected_accepted(tree, sizes)
    assert expected[0] == 0.0 and (np.diff(expected) >= -1e-12).all()
    # Sizes past the tree's own count as the whole tree.
    assert ConfidenceCalibration().expected_accepted(tree, np.array([10_000]))[0] == pytest.approx(expected[-1])


@pytest.mark.parametrize(
    "slope, offset",
    [(1.1, 0.6), (0.7, -0.8)],
    ids=["under-confident head (greedy-like)", "over-confident head (sampling-like)"],
)
def test_calibration_converges_on_a_synthetic_stream(slope, offset):
    calibration = ConfidenceCalibration()
    prior_error, mean_truth = prediction_error(calibration, slope, offset)
    run_stream(calibration, slope, offset, rounds=400, seed=1)
    error, _ = prediction_error(calibration, slope, offset)
    assert error < 0.1 * mean_truth + 0.05
    assert error < prior_error / 3


def test_calibration_follows_a_change_of_acceptance():
    # Greedy-like acceptance, then the same head with sampling-like acceptance: the fit moves over within rounds.
    calibration = ConfidenceCalibration()
    run_stream(calibration, 1.1, 0.6, rounds=300, seed=2)
    high, _ = prediction_error(calibration, 0.7, -0.8)
    run_stream(calibration, 0.7, -0.8, rounds=150, seed=3)
    error, mean_truth = prediction_error(calibration, 0.7, -0.8)
    assert error < 0.3 * mean_truth and error < high / 5


def test_root_only_rounds_leave_the_fit_alone():
    calibration = ConfidenceCalibration()
    run_stream(calibration, 1.1, 0.6, rounds=50, seed=4)
    before = (calibration.slope, calibration.offset, calibration.rounds)
    calibration.observe(TreeArrays.of(DraftTree.root_only(5)), 0)
    assert (calibration.slope, calibration.offset, calibration.rounds) == before


def test_prefix_of_the_arrays_is_the_truncated_tree():
    tree = random_tree(torch.Generator().manual_seed(5))
    arrays = TreeArrays.of(tree)
    truncated = TreeArrays.of(tree.truncated(9))
    assert np.array_equal(arrays.prefix(9).scores, truncated.scores)
    assert np.array_equal(arrays.prefix(9).depth_one_hot[:, : truncated.depth_one_hot.shape[1]],
                          truncated.depth_one_hot)


def test_a_tree_without_scores_is_refused():
    with pytest.raises(ValueError, match="no node scores"):
        TreeArrays.of(DraftTree(tokens=[1], parents=[-1], depths=[0]))
