"""Draft windows: head layers that attend only the last positions of the context (declared sliding-window layers,
or `draft_window=` for any head). Drafts change; the output never does."""

import pytest
import torch

import jetspec_hf
from jetspec_hf import JetSpecDraftModel
from jetspec_hf.generation.drafting import HeadDrafter
from jetspec_hf.generation.draft_forward import DraftForward
from tiny_models import MASK_TOKEN_ID, random_prompt, refuse_forwards, tiny_head, tiny_target

WINDOW = 6


def _features(head, target, length, seed=3):
    width = len(head.config.target_layer_ids) * target.config.hidden_size
    return torch.randn(1, length, width, generator=torch.Generator().manual_seed(seed))


def _windowed_copy(head, layer_types, window=WINDOW):
    """The same weights, with `layer_types` sliding layers of `window`."""
    config = head.config.to_dict()
    config.update(layer_types=layer_types, sliding_window=window)
    windowed = JetSpecDraftModel(type(head.config).from_dict(config)).eval()
    windowed.load_state_dict(head.state_dict())
    return windowed


def _model_forward(head, target, features, block_ids):
    with torch.no_grad():
        return head(noise_embeds=target.get_input_embeddings()(block_ids),
                    context_hidden_states=features).last_hidden_state[0]


def test_config_keeps_declared_windows_through_a_save(tmp_path):
    target = tiny_target()
    head = _windowed_copy(tiny_head(target), ["sliding_attention", "full_attention"])
    assert head.config.layer_windows == [WINDOW, None]
    head.save_pretrained(tmp_path / "head")
    head.save_pretrained(tmp_path / "released", checkpoint_format="released")
    for folder in ("head", "released"):
        assert JetSpecDraftModel.from_pretrained(tmp_path / folder).config.layer_windows == [WINDOW, None]


def test_a_sliding_layer_without_a_window_is_refused():
    target = tiny_target()
    config = tiny_head(target).config.to_dict()
    config.update(layer_types=["sliding_attention", "full_attention"], sliding_window=None)
    with pytest.raises(ValueError, match="sliding_window"):
        type(tiny_head(target).config).from_dict(config)


def test_model_forward_hides_keys_beyond_the_window():
    target = tiny_target()
    head = tiny_head(target)
    features = _features(head, target, 30)
    block_ids = torch.tensor([[10] + [MASK_TOKEN_ID] * 7])
    full = _model_forward(head, target, features, block_ids)
    windowed = _windowed_copy(head, ["sliding_attention", "sliding_attention"])
    # Keys further back than the window do not matter: changing them leaves the windowed head's output alone.
    changed = features.clone()
    changed[:, :20] = torch.randn_like(changed[:, :20])
    assert not torch.allclose(_model_forward(windowed, target, features, block_ids), full, atol=1e-4)
    torch.testing.assert_close(_model_forward(windowed, target, changed, block_ids),
                               _model_forward(windowed, target, features, block_ids))
    # A window longer than the whole sequence is full attention.
    wide = _windowed_copy(head, ["sliding_attention", "sliding_attention"], window=1000)
    torch.testing.assert_close(_model_forward(wide, target, features, block_ids), full)


def test_draft_window_setting_equals_declaring_every_layer_sliding():
    target = tiny_target()
    head = tiny_head(target)
    features = _features(head, target, 40)
    block = target.get_input_embeddings()(torch.tensor([[10] + [MASK_TOKEN_ID] * 7]))
    outputs = []
    for lean in (DraftForward(head, draft_window=WINDOW),
                 DraftForward(_windowed_copy(head, ["sliding_attention"] * 2))):
        state = lean.new_state()
        lean.add_context(state, features)
        with torch.no_grad():
            outputs.append(lean.draft(state, block)[0])
    torch.testing.assert_close(*outputs)


def test_windows_with_holes_in_a_batch_equal_each_row_alone():
    target = tiny_target()
    head = tiny_head(target)
    features = _features(head, target, 30)
    lean = DraftForward(head, draft_window=WINDOW)
    batch = lean.new_state(batch_size=2)
    lean.add_context(batch, features.expand(2, -1, -1)[:, :20])
    # Row 1 gets 10 more context rows, row 0 only 4: row 0's other six columns are holes.
    valid = torch.tensor([[True] * 4 + [False] * 6, [True] * 10])
    lean.add_context(batch, features.expand(2, -1, -1)[:, 20:30], valid=valid, counts=[4, 10])
    block = target.get_input_embeddings()(torch.tensor([[10] + [MASK_TOKEN_ID] * 7]))
    with torch.no_grad():
        together = lean.draft(batch, block.expand(2, -1, -1))
    for row, length in ((0, 24), (1, 30)):
        alone = lean.new_state()
        lean.add_context(alone, features[:, :length])
        with torch.no_grad():
            torch.testing.assert_close(together[row], lean.draft(alone, block)[0], rtol=1e-4, atol=1e-5)


def test_a_windowed_head_drafts_differently_from_the_same_weights_without_it():
    target = tiny_target()
    head = tiny_head(target)
    features = _features(head, target, 40)
    anchor = torch.tensor([[10]])
    drafts = []
    for window in (None, WINDOW):
        drafter = HeadDrafter(head, target.get_input_embeddings(), target.get_output_embeddings(),
                              draft_window=window)
        drafter.add_context(features)
        with torch.no_grad():
            drafts.append(drafter.draft(anchor, 7))
    assert not torch.allclose(drafts[0], drafts[1])


@pytest.mark.parametrize("budget", [4, 16, "auto"])
@pytest.mark.parametrize("max_new_tokens", [1, 13, 40])
def test_windowed_decoding_is_token_identical_to_plain_greedy(budget, max_new_tokens):
    target = jetspec_hf.enable(tiny_target())
    declared = _windowed_copy(tiny_head(target), ["sliding_attention", "full_attention"])
    for seed in (0, 1):
        prompt = random_prompt(seed, 30)
        kwargs = dict(attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=max_new_tokens)
        with torch.no_grad():
            expected = target.generate(prompt, **kwargs)
            for head, extra in ((declared, {}), (tiny_head(target), {"draft_window": 4})):
                got = target.generate(prompt, assistant_model=head, tree_budget=budget, **extra, **kwargs)
                assert torch.equal(got, expected), (seed, extra)


def test_windowed_batches_are_token_identical_to_plain_batched_greedy():
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    prompts = [random_prompt(5, 25)[0], random_prompt(6, 14)[0]]
    width = max(len(p) for p in prompts)
    input_ids = torch.zeros(2, width, dtype=torch.long)
    attention_mask = torch.zeros(2, width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = prompt
        attention_mask[row, width - len(prompt):] = 1
    kwargs = dict(attention_mask=attention_mask, do_sample=False, max_new_tokens=30, pad_token_id=0)
    with torch.no_grad():
        expected = target.generate(input_ids, **kwargs)
        got = target.generate(input_ids, assistant_model=head, tree_budget=8, draft_window=5, **kwargs)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("window", [0, -3, True, 2.5, "8"])
def test_bad_draft_windows_are_refused_before_any_work(monkeypatch, window):
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    refuse_forwards(monkeypatch, target)
    prompt = random_prompt(0, 10)
    with pytest.raises(ValueError, match="draft_window"):
        target.generate(prompt, attention_mask=torch.ones_like(prompt), assistant_model=head, draft_window=window,
                        max_new_tokens=5)


def test_packed_training_masks_refuse_windowed_heads():
    target = tiny_target()
    head = _windowed_copy(tiny_head(target), ["sliding_attention", "full_attention"])
    block = target.get_input_embeddings()(torch.tensor([[10] + [MASK_TOKEN_ID] * 7]))
    with pytest.raises(NotImplementedError, match="sliding-window"):
        head(noise_embeds=block, context_hidden_states=_features(head, target, 5),
             attention_mask=torch.zeros(1, 1, 8, 13))


@pytest.mark.parametrize("source", ["kwarg", "generation_config"])
def test_draft_window_reaches_the_drafting_forward(monkeypatch, source):
    from transformers import GenerationConfig

    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    seen = []
    original = DraftForward.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(list(self.windows))

    monkeypatch.setattr(DraftForward, "__init__", recording)
    prompt = random_prompt(0, 20)
    setting = {"draft_window": 5} if source == "kwarg" else {
        "generation_config": GenerationConfig(draft_window=5, do_sample=False, max_new_tokens=6)}
    with torch.no_grad():
        target.generate(prompt, attention_mask=torch.ones_like(prompt), assistant_model=head, tree_budget=4,
                        do_sample=False, max_new_tokens=6, **setting)
    assert seen and seen[-1] == [5, 5]
