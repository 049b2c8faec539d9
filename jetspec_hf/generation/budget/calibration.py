"""From the head's confidence to the expected number of accepted draft tokens, calibrated on the rounds already run.

Under the node-level tree (`tree.py`) the target accepts a node when it accepts every node on the node's path, so
the expected number of accepted draft tokens of a tree is the sum of its nodes' acceptance probabilities. The head's
own path probabilities are not those: on the bundled pair the head is under-confident with greedy decoding (its
probabilities add up to 1.1 per 64-node tree where 3.2 tokens are accepted) and over-confident with sampling at
temperature 0.7 (0.76 where 0.50 are). The mapping depends on the head, the target, the text and the sampling
settings, so it is learnt from the rounds of the running generation instead of being fixed.

The model: a node at depth `d` whose path has log-probability `s` under the head is accepted with probability
`exp(min(0, a * s + b * d))`: a sharper (`a > 1`) or flatter head, and a per-level shift `b` (a temperature on the
head's logits changes every level's normaliser). The chance that at least `d` draft tokens are accepted is the sum
over the depth-`d` nodes (the accepted path is one path), held to at most 1 and to at most the chance for `d - 1`;
the expectation is the sum of those chances. Fitted offline on the bundled pair this reaches a Pearson correlation of
0.92 between expected and accepted tokens per round with greedy decoding (mean absolute error per decile of the
expectation: 0.23 tokens on 16-node trees), and the (a, b) fitted on 64-node trees predicts 16-node trees as well.
Clamping each node's conditional probability instead of its path fitted no better and needs a walk over the tree.

The fit: every round reports only how many draft tokens were accepted (`BudgetPolicy.observe`), which is what the
model is asked to predict, so (a, b) minimises the squared error between each verified tree's expectation and its
accepted count, past rounds' errors weighted down geometrically so that the fit follows a change of text or
settings. It is solved recursively, one Gauss-Newton step per round (the recursive prediction-error method): a
round costs a few operations on the tree's nodes, not a refit. The prior, the head's own probabilities (a = 1,
b = 0), keeps a small steady weight, which also holds the fit where rounds do not tell a from b.
"""

from __future__ import annotations


import numpy as np

from ..tree import DraftTree

# Where (a, b) may go: a sharper or flatter head than its own probabilities say, and a shift per tree level.
SLOPE_RANGE = (0.2, 3.0)
OFFSET_RANGE = (-4.0, 4.0)
# Weight of the past per observed round: the fit remembers about 1 / (1 - FORGETTING) = 33 rounds.
FORGETTING = 0.97
# Where the fit starts (the head's own probabilities, a = 1, b = 0), and how firmly: in rounds' worth of
# squared-error curvature per unit of (a, b).
PRIOR_SLOPE, PRIOR_OFFSET, PRIOR_WEIGHT = 1.0, 0.0, 1.0
# Largest change of a and of b in one round, so that one surprising round cannot throw the fit far off.
MAX_SLOPE_STEP, MAX_OFFSET_STEP = 0.2, 0.3


class TreeArrays:
    """A tree's node scores and depths as arrays, in creation order (so that its first n rows are its first n nodes).

    Attributes:
        scores: `(N,)` each node's path log-probability under the drafter (0 for the root).
        depths: `(N,)` node depths, as floats.
        depth_one_hot: `(N, D)`, entry `[n, d - 1]` is 1 when node n sits at depth d (the root is in no column).
    """

    def __init__(self, scores: np.ndarray, depths: np.ndarray, depth_one_hot: np.ndarray | None = None):
        self.scores = scores
        self.depths = depths
        if depth_one_hot is None:
            max_depth = int(depths.max(initial=0))
            depth_one_hot = (depths[:, None] == np.arange(1, max_depth + 1)[None, :]).astype(np.float64)
        self.depth_one_hot = depth_one_hot

    @classmethod
    def of(cls, tree: DraftTree) -> TreeArrays:
        if tree.scores is None:
            raise ValueError("The tree carries no node scores; build it with `build_tree` to calibrate it.")
        return cls(np.asarray(tree.scores, dtype=np.float64), np.asarray(tree.depths, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.scores)

    def prefix(self, size: int) -> TreeArrays:
        """The tree's first `size` nodes (a truncated tree)."""
        if size >= len(self):
            return self
        return TreeArrays(self.scores[:size], self.depths[:size], self.depth_one_hot[:size])


def path_probabilities(tree: TreeArrays, slope: float, offset: float) -> np.ndarray:
    """`(N,)` calibrated acceptance probability of every node of `tree` under (a, b) = (slope, offset)."""
    return np.exp(np.minimum(slope * tree.scores + offset * tree.depths, 0.0))


def held_acceptance(by_depth: np.ndarray) -> np.ndarray:
    """Per-depth probability sums `(..., D)` held to [0, 1] and non-increasing with depth: the chance that at least
    d draft tokens are accepted, d = 1..D (one path is accepted, so that chance cannot rise with depth)."""
    return np.minimum.accumulate(np.minimum(by_depth, 1.0), axis=-1)


class ConfidenceCalibration:
    """The online fit of the head's confidence to the target's acceptance (see the module doc), starting from the
    head's own probabilities (`PRIOR_SLOPE`, `PRIOR_OFFSET`) and forgetting the past by `FORGETTING` per round."""

    def __init__(self):
        self.slope, self.offset = PRIOR_SLOPE, PRIOR_OFFSET
        # Curvature (symmetric 2x2: aa, ab, bb) of the forgotten squared errors and the prior: the step's metric.
        self._curvature = [PRIOR_WEIGHT, 0.0, PRIOR_WEIGHT]
        self.rounds = 0

    def node_probabilities(self, tree: TreeArrays) -> np.ndarray:
        """`(N,)` calibrated acceptance probability of every node of `tree` (the root's is 1)."""
        return path_probabilities(tree, self.slope, self.offset)

    def expected_accepted(self, tree: TreeArrays, sizes: np.ndarray) -> np.ndarray:
        """Expected accepted draft tokens of the tree's first `n` nodes, for every `n` in `sizes` (each >= 1)."""
        # Row n - 1 of the running sums: each depth's probability mass among the first n nodes.
        running = np.cumsum(tree.depth_one_hot * self.node_probabilities(tree)[:, None], axis=0)
        return held_acceptance(running[np.minimum(sizes, len(tree)) - 1]).sum(axis=-1)

    def observe(self, tree: TreeArrays, accepted: int) -> None:
        """Fold in one verified tree of which `accepted` draft tokens were accepted."""
        if len(tree) < 2:
            return  # a root-only round says nothing about the head
        expected, gradient_slope, gradient_offset = self._expected_with_gradient(tree)
        # Recursive Gauss-Newton: forget, add this round's curvature and the prior's steady share, then step.
        forgetting, prior = FORGETTING, (1.0 - FORGETTING) * PRIOR_WEIGHT
        aa, ab, bb = self._curvature
        aa = forgetting * aa + gradient_slope * gradient_slope + prior
        ab = forgetting * ab + gradient_slope * gradient_offset
        bb = forgetting * bb + gradient_offset * gradient_offset + prior
        self._curvature = [aa, ab, bb]
        error = expected - accepted
        descent_slope = gradient_slope * error + prior * (self.slope - PRIOR_SLOPE)
        descent_offset = gradient_offset * error + prior * (self.offset - PRIOR_OFFSET)
        determinant = aa * bb - ab * ab
        step_slope = (bb * descent_slope - ab * descent_offset) / determinant
        step_offset = (aa * descent_offset - ab * descent_slope) / determinant
        self.slope = _clamp(self.slope - _clamp(step_slope, MAX_SLOPE_STEP), *SLOPE_RANGE)
        self.offset = _clamp(self.offset - _clamp(step_offset, MAX_OFFSET_STEP), *OFFSET_RANGE)
        self.rounds += 1

    def _expected_with_gradient(self, tree: TreeArrays) -> tuple[float, float, float]:
        """The tree's expectation under the current (a, b), and its derivatives by a and by b."""
        exponent = self.slope * tree.scores + self.offset * tree.depths
        probabilities = np.exp(np.minimum(exponent, 0.0))
        # A clamped node (probability 1) does not move with (a, b).
        moving = probabilities * (exponent < 0.0)
        one_hot = tree.depth_one_hot
        by_depth = (probabilities @ one_hot).tolist()
        by_slope = ((moving * tree.scores) @ one_hot).tolist()
        by_offset = ((moving * tree.depths) @ one_hot).tolist()
        # Each held chance is the level sum of the depth where its running minimum was set (a level sum held at
        # 1 does not move).
        expected = gradient_slope = gradient_offset = 0.0
        held, held_slope, held_offset = 1.0, 0.0, 0.0
        for level, level_slope, level_offset in zip(by_depth, by_slope, by_offset):
            if level < held:
                held, held_slope, held_offset = level, level_slope, level_offset
            expected += held
            gradient_slope += held_slope
            gradient_offset += held_offset
        return expected, gradient_slope, gradient_offset


def _clamp(value: float, low: float, high: float | None = None) -> float:
    """`value` held to [low, high], or to [-low, low] when `high` is not given."""
    if high is None:
        low, high = -low, low
    return min(max(value, low), high)


__all__ = ["ConfidenceCalibration", "TreeArrays", "held_acceptance", "path_probabilities"]
