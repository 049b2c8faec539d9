"""Every `generate` option the tree path cannot honour is refused by name, before anything runs or streams."""

import sys
import threading

import pytest
import torch
from transformers import GenerationConfig, TextIteratorStreamer
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation.streamers import BaseStreamer

from tiny_models import random_prompt, refuse_forwards, tiny_tokenizer


class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.events = []

    def put(self, value):
        self.events.append("put")

    def end(self):
        self.events.append("end")


@pytest.fixture
def no_forward(pair, monkeypatch):
    """Fail the test if the target runs any forward."""
    refuse_forwards(monkeypatch, pair[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_beams=2), "Beam search"),
        (dict(num_return_sequences=2, do_sample=True), "num_return_sequences"),
        (dict(stop_strings="ab"), "tokenizer"),
        (dict(use_cache=False), "KV cache"),
        (dict(cache_implementation="quantized"), "cache_implementation='quantized'"),
        (dict(output_attentions=True), "`output_attentions`"),
        (dict(output_hidden_states=True), "`output_hidden_states`"),
        (dict(dola_layers="high"), "`dola_layers`"),
        (dict(penalty_alpha=0.6, top_k=4), "`penalty_alpha`"),
        (dict(guidance_scale=1.5), "`guidance_scale`"),
        (dict(token_healing=True), "`token_healing`"),
        (dict(num_assistant_tokens=5), "`num_assistant_tokens`"),
        (dict(assistant_confidence_threshold=0.3), "`assistant_confidence_threshold`"),
        (dict(max_matching_ngram_size=2, prompt_lookup_num_tokens=3), "`max_matching_ngram_size`"),
        (dict(position_ids=torch.arange(5)[None]), "`position_ids`"),
    ],
)
def test_each_unsupported_option_is_refused_by_name(pair, no_forward, kwargs, message):
    target, head = pair
    with pytest.raises(ValueError, match=message):
        target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=head, **kwargs)


def test_options_set_in_a_generation_config_are_checked_too(pair, no_forward):
    target, head = pair
    with pytest.raises(ValueError, match="`output_hidden_states`"):
        target.generate(random_prompt(0, 5), generation_config=GenerationConfig(output_hidden_states=True,
                        max_new_tokens=4), assistant_model=head)


def test_inputs_embeds_and_other_caches_are_refused(pair, no_forward):
    target, head = pair
    embeds = torch.zeros(1, 5, target.config.hidden_size)
    with pytest.raises(ValueError, match="`inputs_embeds`"):
        target.generate(inputs_embeds=embeds, max_new_tokens=4, assistant_model=head)
    with pytest.raises(ValueError, match="supports DynamicCache and StaticCache"):
        target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=head,
                        cache=EncoderDecoderCache(DynamicCache(), DynamicCache()))


def test_what_a_batch_cannot_do_is_refused_by_name(pair, no_forward):
    target, head = pair
    batch = torch.cat([random_prompt(0, 5), random_prompt(1, 5)])
    with pytest.raises(ValueError, match="streamer takes one sequence"):
        target.generate(batch, max_new_tokens=4, assistant_model=head, streamer=RecordingStreamer())
    for name in ("output_scores", "output_logits"):
        with pytest.raises(ValueError, match=f"`{name}`"):
            target.generate(batch, max_new_tokens=4, assistant_model=head, return_dict_in_generate=True,
                            **{name: True})
    with pytest.raises(ValueError, match="`prefix_allowed_tokens_fn`"):
        target.generate(batch, max_new_tokens=4, assistant_model=head,
                        prefix_allowed_tokens_fn=lambda batch_id, ids: list(range(96)))
    cache = DynamicCache(config=target.config)
    cache.update(torch.zeros(2, 2, 3, 16), torch.zeros(2, 2, 3, 16), 0)
    with pytest.raises(ValueError, match="non-empty `cache`"):
        target.generate(batch, max_new_tokens=4, assistant_model=head, cache=cache)


@pytest.mark.parametrize("kwargs", [dict(use_cache=False), dict(cache_implementation="quantized"), dict(num_beams=2)])
def test_refusals_come_before_the_prompt_is_streamed(pair, kwargs):
    target, head = pair
    streamer = RecordingStreamer()
    with pytest.raises(ValueError):
        target.generate(random_prompt(0, 5), max_new_tokens=4, assistant_model=head, streamer=streamer, **kwargs)
    assert streamer.events == []


def test_a_streamer_gets_end_when_generation_fails_midway(pair, monkeypatch):
    target, head = pair
    tokenizer = tiny_tokenizer()
    streamer = TextIteratorStreamer(tokenizer, timeout=30)
    consumer_finished = threading.Event()

    def consume():
        list(streamer)  # returns once end() is called; a missing end() would time out and raise here
        consumer_finished.set()

    consumer = threading.Thread(target=consume)
    consumer.start()

    def fail(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(sys.modules["jetspec_hf.generation.loop"], "verify_trees", fail)
    with pytest.raises(RuntimeError, match="device lost"):
        target.generate(random_prompt(2, 5), max_new_tokens=8, assistant_model=head, streamer=streamer)
    consumer.join(timeout=30)
    assert consumer_finished.is_set()


def test_a_plain_call_and_a_generation_config_call_warn_no_more_than_plain(pair, caplog, recwarn):
    target, head = pair
    prompt = random_prompt(3, 5)
    config = GenerationConfig(max_new_tokens=6, do_sample=False)
    with caplog.at_level("WARNING"):
        target.generate(prompt, generation_config=config)
        target.generate(prompt, max_new_tokens=6, do_sample=False)
    plain_messages = {record.getMessage() for record in caplog.records} | {str(w.message) for w in recwarn}
    caplog.clear()
    recwarn.clear()
    with caplog.at_level("WARNING"):
        target.generate(prompt, generation_config=config, assistant_model=head)
        target.generate(prompt, max_new_tokens=6, do_sample=False, assistant_model=head)
    tree_messages = {record.getMessage() for record in caplog.records} | {str(w.message) for w in recwarn}
    assert tree_messages <= plain_messages
