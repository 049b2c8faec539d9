"""Training the head's `fc` on inputs brought to one scale, saved as the plain `fc` every engine loads.

Real targets carry *massive activations*: a few hidden dimensions of the middle and late layers reach values a
thousand times the rest (SmolLM2-135M-Instruct, layers 14-27: per-dimension standard deviation up to ~1,300 against
a median of 5-15, single values near 25,000). A randomly initialised `fc` over the concatenated tapped layers then
sees mostly those few dimensions, and Adam's per-weight steps move their columns as much as any other, so the
projection learns slowly and noisily.

So during training `fc` reads its input divided by a fixed per-dimension scale `s` (the root mean square of each
dimension over ordinary rows of the training data's features: rows whose norm is within `OUTLIER_FACTOR` of the
median, so that the few attention-sink rows do not set the scale), through a forward pre-hook: the trained weight
`W` computes `W (x / s)`. Saving folds the scale in, `W' = W diag(1/s)`, which computes the same function with the
architecture unchanged; resuming unfolds it (`W = W' diag(s)`).
"""

from __future__ import annotations

import torch
from torch import nn

OUTLIER_FACTOR = 4.0
SAMPLE_SEQUENCES = 64


def feature_scales(features: list[torch.Tensor], hidden_size: int) -> torch.Tensor:
    """The per-dimension scale `s` `[k*H]` of the concatenated tapped features (a list of `[T, k*H]` tensors).

    Each tapped layer's ordinary rows (norm within `OUTLIER_FACTOR` of that layer's median row norm) give each of
    its dimensions' root mean square; a dimension that is (near) zero there keeps scale 1.
    """
    rows = torch.cat([f.float() for f in features])
    scales = []
    for start in range(0, rows.shape[1], hidden_size):
        block = rows[:, start : start + hidden_size]
        norms = block.pow(2).mean(-1).sqrt()
        ordinary = block[norms <= OUTLIER_FACTOR * norms.median()]
        scale = ordinary.pow(2).mean(0).sqrt()
        scales.append(torch.where(scale > 1e-6, scale, torch.ones_like(scale)))
    return torch.cat(scales)


class ScaledFc:
    """The training-time reparametrisation of `head.fc` (see the module doc): `attach`, `fold` before saving,
    `unfold` after."""

    def __init__(self, fc: nn.Linear, scales: torch.Tensor):
        self.fc = fc
        self.scales = scales.to(fc.weight.device, fc.weight.dtype)
        self._hook = fc.register_forward_pre_hook(lambda module, inputs: (inputs[0] / self.scales.to(inputs[0].dtype),))
        self.folded = False

    @torch.no_grad()
    def fold(self) -> None:
        """Turn the weight into the plain `fc` weight (`W diag(1/s)`) and stop dividing the input."""
        if not self.folded:
            self.fc.weight.div_(self.scales)
            self._hook.remove()
            self.folded = True

    @torch.no_grad()
    def unfold(self) -> None:
        """Back to training: the weight becomes `W' diag(s)` again and the input is divided once more."""
        if self.folded:
            self.fc.weight.mul_(self.scales)
            self._hook = self.fc.register_forward_pre_hook(
                lambda module, inputs: (inputs[0] / self.scales.to(inputs[0].dtype),)
            )
            self.folded = False

    @torch.no_grad()
    def folded_copy_of(self, head_copy: nn.Module) -> None:
        """Fold the scale into a deep copy of the head (its `fc` shares nothing with the training one)."""
        head_copy.fc._forward_pre_hooks.clear()
        head_copy.fc.weight.div_(self.scales.to(head_copy.fc.weight.device, head_copy.fc.weight.dtype))

    @torch.no_grad()
    def load_folded(self, weight: torch.Tensor) -> None:
        """Set the training weight from a saved (folded) `fc` weight."""
        self.fc.weight.copy_(weight.to(self.fc.weight.dtype) * self.scales)


__all__ = ["OUTLIER_FACTOR", "SAMPLE_SEQUENCES", "ScaledFc", "feature_scales"]
