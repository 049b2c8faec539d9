"""Output type of tree decoding."""

from __future__ import annotations

from dataclasses import dataclass

from transformers.generation.utils import GenerateDecoderOnlyOutput


@dataclass
class JetSpecGenerateOutput(GenerateDecoderOnlyOutput):
    """`GenerateDecoderOnlyOutput` plus per-round statistics of the tree path.

    Attributes:
        accepted_lengths (`list[int]`):
            Tokens committed in each verify round, correction included (the last round counts only tokens kept
            before a stop). Their mean is τ, the accepted tokens per round.
        tree_sizes (`list[int]`):
            Nodes in each round's tree, root included (= tokens the target verified in that round).
        lookup_lengths (`list[int]`, *optional*):
            With `prompt_lookup_num_tokens`: how many of each round's accepted draft tokens the prompt-lookup branch
            had proposed.
        expected_accepted (`list[float]`, *optional*):
            With `tree_budget="auto"`: the calibrated expected number of accepted draft tokens of each round's
            verified tree (0 for a root-only round), next to what was accepted (`accepted_lengths` minus one).

    The first new token comes from the prefill's logits, as in plain decoding, and belongs to no round.
    """

    accepted_lengths: list[int] | None = None
    tree_sizes: list[int] | None = None
    lookup_lengths: list[int] | None = None
    expected_accepted: list[float] | None = None

    @property
    def tau(self) -> float:
        """Mean tokens committed per round (τ)."""
        return sum(self.accepted_lengths) / max(len(self.accepted_lengths), 1)


__all__ = ["JetSpecGenerateOutput"]
