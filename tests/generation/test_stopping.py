import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

from jetspec_hf.generation.stopping import host_stop_check, tokens_before_stop


class LongerThan(StoppingCriteria):
    def __init__(self, length):
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] > self.length, dtype=torch.bool)


def _first_stop_by_criteria(tokens, input_ids, criteria):
    """Reference: run the criteria after every token, as plain decoding does."""
    for position in range(len(tokens)):
        prefix = torch.cat([input_ids, torch.tensor([tokens[: position + 1]])], dim=1)
        if criteria(prefix, None).any():
            return position + 1, True
    return len(tokens), False


def test_host_check_agrees_with_the_length_and_eos_criteria():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.tensor([[5, 6, 7]])
    criteria = StoppingCriteriaList([MaxLengthCriteria(max_length=12), EosTokenCriteria(eos_token_id=[3, 4])])
    assert host_stop_check(criteria) is not None
    for _ in range(200):
        tokens = torch.randint(0, 12, (int(torch.randint(1, 14, (1,), generator=generator)),), generator=generator)
        tokens = tokens.tolist()
        assert tokens_before_stop(tokens, input_ids, criteria) == _first_stop_by_criteria(tokens, input_ids, criteria)


def test_other_criteria_are_evaluated_after_each_token():
    input_ids = torch.tensor([[5, 6, 7]])
    criteria = StoppingCriteriaList([EosTokenCriteria(eos_token_id=9), LongerThan(5)])
    assert host_stop_check(criteria) is None
    assert tokens_before_stop([1, 2, 3, 4], input_ids, criteria) == (3, True)
    assert tokens_before_stop([9, 2, 3, 4], input_ids, criteria) == (1, True)
    assert tokens_before_stop([1], input_ids, criteria) == (1, False)
