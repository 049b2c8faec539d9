import math

import pytest

from jetspec_hf.generation.lookup import PromptLookup


def _lookup(sequence, num_tokens=5):
    lookup = PromptLookup(num_tokens)
    lookup.extend(sequence)
    return lookup


def test_the_longest_matching_ngram_wins_and_its_latest_occurrence_is_copied():
    # The last 3-gram (1, 2, 3) occurred at the start, followed by 4 5; the last 1-gram (3) more recently, by 9.
    lookup = _lookup([1, 2, 3, 4, 5, 3, 9, 7, 1, 2, 3], num_tokens=2)
    assert lookup.continuation() == [4, 5]
    # Most recent of two earlier occurrences: (5, 6) was followed by 7 first, then by 8.
    assert _lookup([5, 6, 7, 0, 5, 6, 8, 0, 5, 6], num_tokens=1).continuation() == [8]


def test_shorter_ngrams_are_the_fallback_and_no_match_gives_nothing():
    assert _lookup([4, 1, 7, 2, 3, 7], num_tokens=2).continuation() == [2, 3]  # only the 1-gram (7) matches
    assert _lookup([1, 2, 3, 4]).continuation() == []
    assert _lookup([]).continuation() == []
    assert _lookup([1, 2, 3, 4]).branch() is None


def test_a_copy_that_reaches_the_end_keeps_copying_from_itself():
    # (a b) was followed by c a b: the copy runs into the end, then repeats itself periodically.
    assert _lookup([1, 2, 3, 1, 2], num_tokens=7).continuation() == [3, 1, 2, 3, 1, 2, 3]
    assert _lookup([6, 6], num_tokens=4).continuation() == [6, 6, 6, 6]


def test_extending_in_pieces_equals_extending_at_once():
    sequence = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3]
    whole = _lookup(sequence)
    for cut in range(len(sequence)):
        pieces = PromptLookup(5)
        pieces.extend(sequence[:cut])
        pieces.extend(sequence[cut:])
        assert pieces.continuation() == whole.continuation()
    assert whole.continuation(max_tokens=2) == whole.continuation()[:2]


def test_the_acceptance_estimate_learns_from_rounds_and_sets_the_branch_prior():
    lookup = _lookup([1, 2, 1, 2], num_tokens=3)
    assert lookup.branch().log_prior == pytest.approx(math.log(0.5))
    lookup.record(proposed=4, accepted=3)
    assert lookup.branch().log_prior == pytest.approx(math.log(4 / 6))
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens"):
        PromptLookup(0)
