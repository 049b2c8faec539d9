"""The packed multi-block objective: mask visibility, anchor rules, and training == inference for every block."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import MASK_TOKEN_ID, tiny_target
from training_helpers import tiny_head_config

from jetspec_hf import JetSpecDraftModel
from jetspec_hf.training.features import TargetFeatureExtractor
from jetspec_hf.training.objective import (
    ObjectiveSettings,
    block_objective,
    depth_weights,
    pack_blocks,
    packed_block_mask,
    packed_head_forward,
    sample_anchors,
)

BLOCK = 6


def expected_visibility(anchors, context_length, block, causal):
    """The visibility rule spelled out with loops: [b, n*B, C + n*B] booleans."""
    batch, slots = len(anchors), len(anchors[0])
    visible = torch.zeros(batch, slots * block, context_length + slots * block, dtype=torch.bool)
    for b in range(batch):
        for j, anchor in enumerate(anchors[b]):
            for i in range(block):
                query = j * block + i
                for key in range(context_length):
                    visible[b, query, key] = key < anchor
                for other in range(block):
                    visible[b, query, context_length + j * block + other] = other <= i or not causal
    return visible


@pytest.mark.parametrize("causal", [True, False])
def test_packed_mask_matches_the_visibility_rule(causal):
    anchors = torch.tensor([[3, 7, 9], [1, 2, 11]])
    mask = packed_block_mask(anchors, context_length=14, block_size=4, causal=causal, dtype=torch.float32)
    assert mask.shape == (2, 1, 12, 14 + 12)
    visible = mask[:, 0] == 0
    assert torch.equal(visible, expected_visibility(anchors.tolist(), 14, 4, causal))
    # Masked entries use the dtype's most negative value: right for eager (added) and sdpa alike.
    assert mask[~(mask == 0)].eq(torch.finfo(torch.float32).min).all()


def test_packed_mask_has_no_cross_block_leak_and_context_strictly_before_anchor():
    anchors = torch.tensor([[4, 5]])
    visible = packed_block_mask(anchors, 10, BLOCK, causal=False, dtype=torch.float32)[0, 0] == 0
    first, second = visible[:BLOCK], visible[BLOCK:]
    # Block 0 (anchor 4) sees context rows 0..3 only: not the anchor's own position, nothing later.
    assert first[:, :4].all() and not first[:, 4:10].any()
    assert second[:, :5].all() and not second[:, 5:10].any()
    # No block row sees the other block, even a bidirectional one.
    assert not first[:, 10 + BLOCK :].any() and not second[:, 10 : 10 + BLOCK].any()


def test_sample_anchors_respects_block_room_loss_start_and_budget():
    lengths = torch.tensor([30, 12, 5, 40])
    loss_starts = torch.tensor([0, 4, 0, 20])
    generator = torch.Generator().manual_seed(0)
    anchors, valid = sample_anchors(lengths, loss_starts, BLOCK, max_anchors=8, generator=generator)
    for row in range(4):
        picked = anchors[row][valid[row]].tolist()
        low, high = max(1, int(loss_starts[row])), int(lengths[row]) - BLOCK
        assert len(picked) == min(8, max(0, high - low + 1))
        assert picked == sorted(set(picked))
        assert all(low <= a <= high for a in picked)
    assert not valid[2].any()  # 5 tokens cannot hold a 6-token block


@pytest.fixture(scope="module")
def target():
    return tiny_target()


@pytest.fixture(scope="module")
def batch(target):
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, target.config.vocab_size, (2, 30), generator=generator)
    lengths = torch.tensor([30, 24])
    input_ids[1, 24:] = 0  # right padding
    loss_starts = torch.tensor([5, 0])
    return input_ids, lengths, loss_starts


def single_block_hidden(head, target, features, input_ids, anchor):
    """What inference computes for one block: context = features[:anchor], positions 0..anchor+B-1, no mask."""
    block_ids = torch.tensor([[int(input_ids[anchor])] + [MASK_TOKEN_ID] * (BLOCK - 1)])
    return head(
        noise_embeds=target.get_input_embeddings()(block_ids),
        context_hidden_states=features[None, :anchor],
        position_ids=torch.arange(anchor + BLOCK)[None],
    ).last_hidden_state[0]


@pytest.mark.parametrize("causal", [True, False])
def test_every_packed_block_equals_its_own_single_block_forward(target, batch, causal):
    input_ids, lengths, loss_starts = batch
    config = tiny_head_config(target, causal=causal, block_size=BLOCK)
    head = JetSpecDraftModel(config).eval()
    features = TargetFeatureExtractor(target, config.target_layer_ids)(input_ids).features
    settings = ObjectiveSettings.from_head_config(config, anchors_per_seq=7)
    packed = pack_blocks(input_ids, lengths, loss_starts, settings, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        packed_hidden = packed_head_forward(head, target.get_input_embeddings(), features, packed, BLOCK)
        checked = 0
        for row in range(2):
            for slot in range(packed.anchors.shape[1]):
                if not packed.valid[row, slot]:
                    continue
                anchor = int(packed.anchors[row, slot])
                single = single_block_hidden(head, target, features[row], input_ids[row], anchor)
                torch.testing.assert_close(packed_hidden[row, slot], single, atol=1e-5, rtol=1e-5)
                checked += 1
    assert checked == int(packed.valid.sum()) >= 10


@pytest.mark.parametrize("causal", [True, False])
def test_one_anchor_loss_equals_the_inference_block_loss(target, batch, causal):
    input_ids, lengths, loss_starts = batch
    config = tiny_head_config(target, causal=causal, block_size=BLOCK)
    head = JetSpecDraftModel(config).eval()
    extracted = TargetFeatureExtractor(target, config.target_layer_ids, with_final_hidden=True)(input_ids[:1])
    anchor = 11
    anchors = (torch.tensor([[anchor]]), torch.tensor([[True]]))
    settings = ObjectiveSettings.from_head_config(config, anchors_per_seq=1, kl_weight=0.5, kl_temperature=2.0)
    with torch.no_grad():
        out = block_objective(head, target.get_input_embeddings(), target.lm_head, input_ids[:1], lengths[:1],
                              loss_starts[:1], extracted.features, settings, extracted.final_hidden, anchors=anchors)
        hidden = single_block_hidden(head, target, extracted.features[0], input_ids[0], anchor)
        logits = target.lm_head(hidden[1:])
        labels = input_ids[0, anchor + 1 : anchor + BLOCK]
        ce = F.cross_entropy(logits, labels)
        # The teacher: the target's own logits at the true prefix, from a plain full forward.
        teacher = target(input_ids[:1]).logits[0, anchor : anchor + BLOCK - 1]
        teacher_logp, student_logp = F.log_softmax(teacher / 2.0, -1), F.log_softmax(logits / 2.0, -1)
        kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).mean() * 4.0
    torch.testing.assert_close(out.ce, ce, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.kl, kl, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.loss, ce + 0.5 * kl, atol=1e-4, rtol=1e-4)
    correct = (logits.argmax(-1) == labels).float()
    assert out.correct_per_depth.tolist() == correct.tolist()
    assert float(out.accepted_sum) == float(torch.cumprod(correct, 0).sum())


def test_separate_labels_replace_the_tokens_and_cut_depths_off_the_greedy_path(target, batch):
    input_ids, lengths, loss_starts = batch
    config = tiny_head_config(target, block_size=BLOCK)
    settings = ObjectiveSettings.from_head_config(config, anchors_per_seq=2)
    anchors = (torch.tensor([[8, 14], [9, 15]]), torch.ones(2, 2, dtype=torch.bool))
    plain = pack_blocks(input_ids, lengths, loss_starts, settings, anchors=anchors)
    # Labels equal to the tokens change nothing.
    same = pack_blocks(input_ids, lengths, loss_starts, settings, anchors=anchors, label_ids=input_ids.clone())
    assert torch.equal(same.labels, plain.labels) and torch.equal(same.label_valid, plain.label_valid)

    label_ids = input_ids.clone()
    label_ids[0, 10] = 0  # block (row 0, anchor 8): depth 2's token is off the path
    label_ids[1, 16] = 0  # block (row 1, anchor 15): depth 1's token is off the path
    packed = pack_blocks(input_ids, lengths, loss_starts, settings, anchors=anchors, label_ids=label_ids)
    expected_valid = plain.label_valid.clone()
    expected_valid[0, 0, 2:] = False  # depths 3.. follow the off-path token; depths 1 and 2 are still right
    expected_valid[1, 1, 1:] = False
    assert torch.equal(packed.label_valid, expected_valid)
    expected_labels = plain.labels.clone()
    expected_labels[0, 0, 1] = expected_labels[1, 1, 0] = 0  # the labels come from label_ids
    assert torch.equal(packed.labels, expected_labels)
    # The other block of each row is untouched.
    assert torch.equal(packed.label_valid[0, 1], plain.label_valid[0, 1])
    assert torch.equal(packed.label_valid[1, 0], plain.label_valid[1, 0])


def test_causal_block_row_ignores_later_rows_bidirectional_does_not(target, batch):
    """Changing the input of a block's LAST row leaves its earlier rows untouched under the causal mask, moves them
    under the bidirectional one, and never reaches another block."""
    input_ids, lengths, loss_starts = batch
    for causal in (True, False):
        config = tiny_head_config(target, causal=causal, block_size=BLOCK)
        head = JetSpecDraftModel(config).eval()
        features = TargetFeatureExtractor(target, config.target_layer_ids)(input_ids).features
        settings = ObjectiveSettings.from_head_config(config, anchors_per_seq=2)
        anchors = (torch.tensor([[8, 14], [9, 15]]), torch.ones(2, 2, dtype=torch.bool))
        packed = pack_blocks(input_ids, lengths, loss_starts, settings, anchors=anchors)
        with torch.no_grad():
            base = packed_head_forward(head, target.get_input_embeddings(), features, packed, BLOCK)
            packed.block_ids[:, BLOCK - 1] = 5  # the last row of block 0 only
            changed = packed_head_forward(head, target.get_input_embeddings(), features, packed, BLOCK)
        earlier_rows_moved = not torch.allclose(base[:, 0, : BLOCK - 1], changed[:, 0, : BLOCK - 1])
        assert earlier_rows_moved == (not causal)
        torch.testing.assert_close(base[:, 1], changed[:, 1])  # the other block never sees it


def test_depth_weights():
    assert depth_weights(5, None).tolist() == [1.0] * 4
    torch.testing.assert_close(depth_weights(4, 2.0), torch.exp(-torch.arange(3.0) / 2.0))


def test_hooked_features_are_the_raw_tapped_layer_outputs(target, batch):
    input_ids = batch[0]
    extracted = TargetFeatureExtractor(target, [0, 2], with_final_hidden=True)(input_ids)
    with torch.no_grad():
        states = target(input_ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(extracted.features, torch.cat([states[1], states[3]], dim=-1))
    torch.testing.assert_close(extracted.final_hidden, states[-1])
