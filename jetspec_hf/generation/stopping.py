"""Where to stop inside a round's committed tokens, exactly where plain decoding would stop."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import StoppingCriteriaList
from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria


def host_stop_check(stopping_criteria: StoppingCriteriaList) -> Callable[[int, int], bool] | None:
    """A host-side equivalent of `stopping_criteria` when it holds only length and EOS criteria, else `None`.

    The returned function takes a newly committed token and the sequence length it brings, and says whether
    plain decoding would stop there; it spares a device sync per token.
    """
    max_length, eos_token_ids = None, set()
    for criterion in stopping_criteria:
        if type(criterion) is MaxLengthCriteria:
            max_length = criterion.max_length if max_length is None else min(max_length, criterion.max_length)
        elif type(criterion) is EosTokenCriteria:
            eos_token_ids.update(_host_eos_ids(criterion))
        else:
            return None

    def should_stop(token: int, length: int) -> bool:
        return token in eos_token_ids or (max_length is not None and length >= max_length)

    return should_stop


# Where an EOS criterion keeps its ids on the host: (the device tensor they were read from, the ids).
_HOST_EOS_IDS_ATTRIBUTE = "_jetspec_host_eos_ids"


def _host_eos_ids(criterion: EosTokenCriteria) -> frozenset[int]:
    """The criterion's EOS ids, read off the device once per criterion instead of once per round (a device sync
    each time). `generate` builds its criteria per call, so a call reads them once; an `eos_token_id` replaced
    since is read again."""
    eos_token_id = criterion.eos_token_id
    cached = getattr(criterion, _HOST_EOS_IDS_ATTRIBUTE, None)
    if cached is None or cached[0] is not eos_token_id:
        cached = (eos_token_id, frozenset(eos_token_id.view(-1).tolist()))
        setattr(criterion, _HOST_EOS_IDS_ATTRIBUTE, cached)
    return cached[1]


def tokens_before_stop(
    tokens: list[int],
    input_ids: torch.LongTensor,
    stopping_criteria: StoppingCriteriaList,
    scores: list[torch.Tensor] | None = None,
) -> tuple[int, bool]:
    """How many of `tokens` (to be appended to `input_ids`) plain decoding would emit, and whether it stops there.

    The criteria are evaluated after each token, with the sequence up to that token, as plain decoding does.
    `scores`, when kept, are all scores so far, those of `tokens` included.
    """
    host_check = host_stop_check(stopping_criteria)
    if host_check is not None:
        for position, token in enumerate(tokens):
            if host_check(token, input_ids.shape[1] + position + 1):
                return position + 1, True
        return len(tokens), False

    extended = torch.cat([input_ids, input_ids.new_tensor([tokens])], dim=1)
    for position in range(len(tokens)):
        length = input_ids.shape[1] + position + 1
        visible_scores = None if scores is None else tuple(scores[: len(scores) - len(tokens) + position + 1])
        if stopping_criteria(extended[:, :length], visible_scores).any():
            return position + 1, True
    return len(tokens), False


__all__ = ["host_stop_check", "tokens_before_stop"]
