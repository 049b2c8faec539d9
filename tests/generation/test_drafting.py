"""The head's incremental context cache must draft exactly what a from-scratch head forward drafts."""

import torch

from jetspec_hf.generation.drafting import HeadDrafter
from tiny_models import MASK_TOKEN_ID, tiny_head, tiny_target


def _draft_from_scratch(head, target, features, anchor, depth):
    block = torch.tensor([[anchor] + [MASK_TOKEN_ID] * (head.config.block_size - 1)])
    with torch.no_grad():
        hidden = head(noise_embeds=target.get_input_embeddings()(block), context_hidden_states=features)
        return target.lm_head(hidden.last_hidden_state[0, 1 : depth + 1])


def test_incremental_rounds_equal_one_full_forward():
    target = tiny_target()
    for causal in (True, False):
        head = tiny_head(target, causal=causal)
        width = len(head.config.target_layer_ids) * target.config.hidden_size
        all_features = torch.randn(1, 15, width)
        drafter = HeadDrafter(head, target.get_input_embeddings(), target.lm_head)
        committed = 0
        for new_rows, anchor in [(6, 10), (1, 11), (4, 12), (3, 13)]:
            drafter.add_context(all_features[:, committed : committed + new_rows])
            committed += new_rows
            depth_logits = drafter.draft(torch.tensor([[anchor]]), depth=5)
            expected = _draft_from_scratch(head, target, all_features[:, :committed], anchor, 5)
            torch.testing.assert_close(depth_logits, expected, rtol=1e-4, atol=1e-4)
            assert drafter.state.length == committed
