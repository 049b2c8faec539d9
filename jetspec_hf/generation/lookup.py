"""Prompt lookup: a draft chain copied from what followed an earlier occurrence of the latest tokens.

Code, quoting and repetitive text repeat themselves: when the last few committed tokens occurred earlier in the
sequence, what followed them then is a cheap guess of what follows now. The chain joins the head's tree as an extra
branch (`tree.ExtraBranch`), so both kinds of guess compete for one node budget and are verified together.
"""

from __future__ import annotations

import math

from .tree import DraftTree, ExtraBranch

# Longest match first: a 3-token match predicts better than a 2- or 1-token one.
NGRAM_SIZES = (3, 2, 1)
# Pseudo-counts of the lookup tokens' acceptance-rate estimate before any round: one accepted of two proposed.
PRIOR_ACCEPTED, PRIOR_PROPOSED = 1.0, 2.0


class PromptLookup:
    """An incremental n-gram index over one sequence, answering "what followed the latest n-gram last time?".

    For every n in `NGRAM_SIZES` the index maps an n-gram to the position right after its most recent occurrence
    that already has a continuation, so a query costs a dictionary lookup and appending a token costs one update per
    n. The estimated acceptance rate of lookup tokens is learnt from the rounds (`record`), so that the chain's
    nodes are scored on the same scale as the head's.

    Args:
        num_tokens: the longest chain to propose (`prompt_lookup_num_tokens`).
    """

    def __init__(self, num_tokens: int):
        if num_tokens < 1:
            raise ValueError(f"`prompt_lookup_num_tokens` must be >= 1, got {num_tokens}.")
        self.num_tokens = num_tokens
        self.sequence: list[int] = []
        self._follow: dict[tuple[int, ...], int] = {}
        self.accepted = PRIOR_ACCEPTED
        self.proposed = PRIOR_PROPOSED

    def extend(self, tokens: list[int]) -> None:
        """Append committed tokens."""
        sequence, follow = self.sequence, self._follow
        for token in tokens:
            # The n-grams ending at the current last token now have a continuation: `token`, at len(sequence).
            end = len(sequence)
            for size in NGRAM_SIZES:
                if end >= size:
                    follow[tuple(sequence[end - size : end])] = end
            sequence.append(token)

    def continuation(self, max_tokens: int | None = None) -> list[int]:
        """The chain that followed the most recent earlier occurrence of the latest 3-, 2- or 1-gram (empty if none).

        When the copied continuation runs into the end of the sequence, copying goes on from the copy itself, so a
        repeating pattern is extended periodically.
        """
        limit = self.num_tokens if max_tokens is None else min(self.num_tokens, max_tokens)
        sequence, length = self.sequence, len(self.sequence)
        for size in NGRAM_SIZES:
            if length < size:
                continue
            start = self._follow.get(tuple(sequence[length - size :]))
            if start is None:
                continue
            chain: list[int] = []
            for offset in range(limit):
                source = start + offset
                chain.append(sequence[source] if source < length else chain[source - length])
            return chain
        return []

    def branch(self, max_tokens: int | None = None) -> ExtraBranch | None:
        """The current chain as a tree branch, or `None` when the latest tokens never occurred before."""
        chain = self.continuation(max_tokens)
        if not chain:
            return None
        return ExtraBranch(tokens=chain, log_prior=math.log(self.accepted / self.proposed))

    def record(self, proposed: int, accepted: int) -> None:
        """Update the acceptance-rate estimate: `proposed` chain tokens were verified, `accepted` of them in a row."""
        self.proposed += proposed
        self.accepted += accepted

    def observe_round(self, tree: DraftTree, branch: ExtraBranch | None, committed_tokens: list[int]) -> int:
        """After a round: learn how the branch fared and index the committed tokens; returns how many branch tokens
        the target accepted."""
        decided, accepted = branch_outcome(tree, branch, committed_tokens)
        self.record(decided, accepted)
        self.extend(committed_tokens)
        return accepted


def branch_outcome(tree: DraftTree, branch: ExtraBranch | None, committed_tokens: list[int]) -> tuple[int, int]:
    """(branch tokens the target decided on, how many of them it accepted) for the lookup's acceptance estimate."""
    if branch is None:
        return 0, 0
    children, node, in_tree = tree.children(), 0, 0
    for token in branch.tokens:
        node = children[node].get(token)
        if node is None:
            break
        in_tree += 1
    accepted = 0
    for token, drafted in zip(committed_tokens, branch.tokens[:in_tree]):
        if token != drafted:
            break
        accepted += 1
    return min(accepted + 1, in_tree), accepted


__all__ = ["NGRAM_SIZES", "PromptLookup", "branch_outcome"]
