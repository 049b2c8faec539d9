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
            depth_logits = drafter.draft(torch.tensor([[anchor]]), depth=5)[0]
            expected = _draft_from_scratch(head, target, all_features[:, :committed], anchor, 5)
            torch.testing.assert_close(depth_logits, expected, rtol=1e-4, atol=1e-4)
            assert drafter.state.length == committed


def test_a_batch_with_ragged_context_drafts_each_row_as_if_alone():
    # Rows commit different numbers of positions per round: the shared columns get holes, the drafts do not change.
    target = tiny_target()
    for causal in (True, False):
        head = tiny_head(target, causal=causal)
        width = len(head.config.target_layer_ids) * target.config.hidden_size
        features = torch.randn(2, 30, width, generator=torch.Generator().manual_seed(5))
        batch = HeadDrafter(head, target.get_input_embeddings(), target.lm_head, batch_size=2)
        alone = [HeadDrafter(head, target.get_input_embeddings(), target.lm_head) for _ in range(2)]
        committed = [0, 0]
        for round_counts in [(6, 2), (1, 4), (3, 1), (0, 5), (2, 2)]:
            longest = max(round_counts)
            chunk = torch.zeros(2, longest, width)
            for row, count in enumerate(round_counts):
                chunk[row, :count] = features[row, committed[row] : committed[row] + count]
                alone[row].add_context(features[row : row + 1, committed[row] : committed[row] + count])
                committed[row] += count
            valid = torch.arange(longest)[None, :] < torch.tensor(round_counts)[:, None]
            batch.add_context(chunk, valid, list(round_counts))
            anchors = torch.tensor([[7], [9]])
            drafted = batch.draft(anchors, depth=4)
            for row in range(2):
                expected = alone[row].draft(anchors[row : row + 1], depth=4)[0]
                torch.testing.assert_close(drafted[row], expected, rtol=1e-4, atol=1e-4)
            assert batch.state.next_positions == committed
        # Squeezing the holes out changes nothing either.
        batch.state.compact()
        assert batch.state.valid is None or bool(batch.state.valid[:, : batch.state.length].any(dim=0).all())
        drafted = batch.draft(anchors, depth=4)
        for row in range(2):
            torch.testing.assert_close(drafted[row], alone[row].draft(anchors[row : row + 1], depth=4)[0],
                                       rtol=1e-4, atol=1e-4)
        batch.select_rows([1])
        torch.testing.assert_close(batch.draft(anchors[1:], depth=4)[0], alone[1].draft(anchors[1:], depth=4)[0],
                                   rtol=1e-4, atol=1e-4)


def test_a_draft_vocabulary_drafts_only_its_tokens_and_decodes_like_plain():
    from jetspec_hf.generation.drafting import HeadDrafter
    from tiny_models import enabled_pair, random_prompt

    target, head = enabled_pair(draft_vocab_size=20)
    with torch.no_grad():
        head.draft_vocab_ids.copy_(torch.arange(40, 60))
    drafter = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings())
    features = torch.randn(1, 5, len(head.config.target_layer_ids) * target.config.hidden_size)
    drafter.add_context(features)
    logits = drafter.draft(torch.tensor([[7]]), 3)
    outside = torch.ones(target.config.vocab_size, dtype=torch.bool)
    outside[40:60] = False
    assert torch.isinf(logits[..., outside]).all() and torch.isfinite(logits[..., ~outside]).all()
    # Scored like the full projection on the tokens it keeps.
    reference = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings())
    head.draft_vocab_ids, kept = None, head.draft_vocab_ids
    reference.add_context(features)
    full = reference.draft(torch.tensor([[7]]), 3)
    head.draft_vocab_ids = kept
    torch.testing.assert_close(logits[..., 40:60], full[..., 40:60])
    for seed, length in ((0, 3), (1, 12)):
        prompt = random_prompt(seed, length)
        assert torch.equal(target.generate(prompt, do_sample=False, max_new_tokens=16, assistant_model=head,
                                           tree_budget=8),
                           target.generate(prompt, do_sample=False, max_new_tokens=16))
