"""Output type of tree decoding, and the words the package uses for what happens in a round.

Glossary:
    round: one draft → tree → verify → accept → cache update cycle; each costs one target forward.
    anchor: a row's last committed token, not yet in the target's cache; the root of the row's next tree.
    node: one token of a round's tree; node 0 is the root (the anchor). Verifying a tree runs every node at once.
    path: the nodes from the root to a node; a node's prefix is the committed tokens plus its path.
    accepted: draft tokens the target's own choices confirmed along one path in a round (the root is not counted).
    committed: tokens a round appends to the output: the accepted draft tokens, then the target's own next token
        (the correction, or the bonus token when every node of the path was accepted), cut where plain decoding
        would stop. Committed = accepted + 1 except in the round a stopping rule ends.
    τ: mean committed tokens per round.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers.generation.utils import GenerateDecoderOnlyOutput


@dataclass
class JetSpecGenerateOutput(GenerateDecoderOnlyOutput):
    """`GenerateDecoderOnlyOutput` plus per-round statistics of the tree path.

    Attributes:
        accepted_lengths (`list[int]`):
            Tokens committed in each verify round (see the glossary: the accepted draft tokens plus the target's own
            token; the last round counts only tokens kept before a stop). Their mean is τ. The name follows the
            convention of speculative-decoding papers, where the correction counts as accepted.
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
