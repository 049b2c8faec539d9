"""The lean drafting forward computes what the head model's own forward computes."""

import pytest
import torch

from jetspec_hf.generation.draft_forward import DraftForward
from tiny_models import MASK_TOKEN_ID, tiny_head, tiny_target


def _model_forward(head, target, features, block_ids):
    with torch.no_grad():
        return head(noise_embeds=target.get_input_embeddings()(block_ids), context_hidden_states=features)


# Head layers' attention: full, or a 12-position sliding window in one layer or both (the context is shorter than
# the window in the first rounds and longer later).
LAYER_TYPES = {
    "full": None,
    "one-sliding": ["sliding_attention", "full_attention"],
    "all-sliding": ["sliding_attention", "sliding_attention"],
}


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("block_length", [1, 3, 8])
@pytest.mark.parametrize("layers", list(LAYER_TYPES))
def test_lean_forward_equals_the_model_forward_round_after_round(causal, block_length, layers):
    target = tiny_target()
    windows = {} if LAYER_TYPES[layers] is None else {"layer_types": LAYER_TYPES[layers], "sliding_window": 12}
    head = tiny_head(target, causal=causal, **windows)
    width = len(head.config.target_layer_ids) * target.config.hidden_size
    features = torch.randn(1, 40, width, generator=torch.Generator().manual_seed(3))
    lean = DraftForward(head)
    state = lean.new_state()
    committed = 0
    for new_rows, anchor in [(9, 10), (1, 11), (5, 12), (0, 13), (25, 14)]:
        if new_rows:
            lean.add_context(state, features[:, committed : committed + new_rows])
        committed += new_rows
        block_ids = torch.tensor([[anchor] + [MASK_TOKEN_ID] * (block_length - 1)])
        with torch.no_grad():
            lean_hidden = lean.draft(state, target.get_input_embeddings()(block_ids))[0]
        expected = _model_forward(head, target, features[:, :committed], block_ids).last_hidden_state[0]
        torch.testing.assert_close(lean_hidden, expected, rtol=1e-4, atol=1e-5)
        assert state.length == committed


def test_buffers_grow_past_their_first_capacity_and_weights_follow_in_place_edits():
    target = tiny_target()
    head = tiny_head(target)
    width = len(head.config.target_layer_ids) * target.config.hidden_size
    features = torch.randn(1, 300, width)
    lean = DraftForward(head)
    state = lean.new_state()
    state_capacity = state.capacity
    lean.add_context(state, features[:, :200])
    lean.add_context(state, features[:, 200:])
    assert state.capacity > state_capacity >= 200
    block_ids = torch.tensor([[7] + [MASK_TOKEN_ID] * 7])
    with torch.no_grad():
        got = lean.draft(state, target.get_input_embeddings()(block_ids))[0]
    expected = _model_forward(head, target, features, block_ids).last_hidden_state[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    with torch.no_grad():
        head.layers[0].mlp.up_proj.weight.mul_(1.5)
    changed = DraftForward(head)
    changed_state = changed.new_state()
    changed.add_context(changed_state, features)
    with torch.no_grad():
        got = changed.draft(changed_state, target.get_input_embeddings()(block_ids))[0]
    expected = _model_forward(head, target, features, block_ids).last_hidden_state[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
