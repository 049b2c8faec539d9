"""`enable(target)` routes JetSpec heads to the tree loop and leaves every other generate call alone."""

import torch
from transformers import pipeline
from transformers.generation.streamers import BaseStreamer

import jetspec_hf
from jetspec_hf.generation.integration import is_enabled
from tiny_models import random_prompt, tiny_head, tiny_target, tiny_tokenizer


class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.events = []

    def put(self, value):
        self.events.append(("put", value.tolist()))

    def end(self):
        self.events.append(("end", None))


def test_enable_is_per_instance_and_idempotent():
    target, other = tiny_target(), tiny_target()
    assert jetspec_hf.enable(target) is target and jetspec_hf.enable(target) is target
    assert is_enabled(target) and not is_enabled(other)
    assert type(target).generate is type(other).generate


def test_other_generate_calls_keep_the_stock_path():
    target = tiny_target()
    prompt = random_prompt(0, 6)
    before = target.generate(prompt, do_sample=False, max_new_tokens=8)
    jetspec_hf.enable(target)
    assert torch.equal(target.generate(prompt, do_sample=False, max_new_tokens=8), before)
    lookup = target.generate(prompt, do_sample=False, max_new_tokens=8, prompt_lookup_num_tokens=3)
    assert torch.equal(lookup, before)


def test_streamer_gets_the_prompt_then_each_new_token_then_end():
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    prompt = random_prompt(1, 5)
    streamer = RecordingStreamer()
    output = target.generate(prompt, do_sample=False, max_new_tokens=9, assistant_model=head, streamer=streamer)
    assert streamer.events[0] == ("put", prompt.tolist())
    streamed = [value for kind, value in streamer.events[1:-1]]
    assert streamed == [[token] for token in output[0, 5:].tolist()]
    assert streamer.events[-1] == ("end", None)


def test_text_generation_pipeline_with_a_head():
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    tokenizer = tiny_tokenizer()
    generator = pipeline("text-generation", model=target, tokenizer=tokenizer)
    prompt = tokenizer.decode(random_prompt(2, 6)[0])
    plain = generator(prompt, max_new_tokens=10, do_sample=False)
    tree = generator(prompt, max_new_tokens=10, do_sample=False, assistant_model=head)
    assert tree[0]["generated_text"] == plain[0]["generated_text"]
    torch.manual_seed(3)
    sampled = generator(prompt, max_new_tokens=10, do_sample=True, assistant_model=head)
    assert sampled[0]["generated_text"].startswith(prompt)
