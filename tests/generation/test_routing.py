"""`enable(target)` routes JetSpec heads to the tree loop and leaves every other generate call alone."""

import copy
import gc
import io
import threading
import weakref

import pytest
import torch
from transformers import TextIteratorStreamer, pipeline
from transformers.generation.streamers import BaseStreamer

import jetspec_hf
from jetspec_hf.generation.routing import is_enabled
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


def test_deep_copy_of_an_enabled_target_generates_with_its_own_weights():
    original = jetspec_hf.enable(tiny_target())
    head = tiny_head(original)
    prompt = random_prompt(4, 6)
    before = original.generate(prompt, do_sample=False, max_new_tokens=12, assistant_model=head)
    duplicate = copy.deepcopy(original)
    assert is_enabled(duplicate) and duplicate.generate.model is duplicate
    with torch.no_grad():
        duplicate.lm_head.weight.mul_(-1.0)
    changed = duplicate.generate(prompt, do_sample=False, max_new_tokens=12, assistant_model=head)
    assert not torch.equal(changed, before)
    assert torch.equal(changed, type(duplicate).generate(duplicate, prompt, do_sample=False, max_new_tokens=12))
    assert torch.equal(original.generate(prompt, do_sample=False, max_new_tokens=12, assistant_model=head), before)


def test_an_enabled_target_pickles_and_is_freed_without_the_cycle_collector():
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    prompt = random_prompt(5, 6)
    expected = target.generate(prompt, do_sample=False, max_new_tokens=10, assistant_model=head)
    buffer = io.BytesIO()
    torch.save(target, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    assert is_enabled(restored)
    assert torch.equal(restored.generate(prompt, do_sample=False, max_new_tokens=10, assistant_model=head), expected)
    gc.collect()
    gc.disable()
    try:
        reference = weakref.ref(target)
        del target
        assert reference() is None, "an enabled target must not sit in a reference cycle"
    finally:
        gc.enable()


def test_two_threads_share_one_target():
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target)
    prompts = [random_prompt(seed, 4 + seed % 5) for seed in range(20)]
    expected_tree = [target.generate(p, do_sample=False, max_new_tokens=12, assistant_model=head) for p in prompts]
    expected_plain = [target.generate(p, do_sample=False, max_new_tokens=12) for p in prompts]
    results, errors = {}, []

    def tree_worker():
        try:
            for index, prompt in enumerate(prompts):
                streamer = TextIteratorStreamer(tiny_tokenizer(), timeout=30)
                thread = threading.Thread(target=lambda: list(streamer))
                thread.start()
                results[("tree", index)] = target.generate(
                    prompt, do_sample=False, max_new_tokens=12, assistant_model=head, streamer=streamer
                )
                thread.join()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    def plain_or_tree_worker():
        try:
            for index, prompt in enumerate(prompts):
                extra = dict(assistant_model=head) if index % 2 else {}
                kind = "tree-2" if index % 2 else "plain"
                results[(kind, index)] = target.generate(prompt, do_sample=False, max_new_tokens=12, **extra)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=tree_worker), threading.Thread(target=plain_or_tree_worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for (kind, index), output in results.items():
        expected = expected_plain[index] if kind == "plain" else expected_tree[index]
        assert torch.equal(output, expected), f"{kind} call {index}"
    assert len(results) == 40


@pytest.mark.parametrize("offload", ["cpu_offload", "disk_offload", "device_map_with_disk"])
def test_offloaded_targets_generate_exactly_like_plain(offload, tmp_path):
    from accelerate import cpu_offload, disk_offload, dispatch_model

    prompt = random_prompt(6, 7)
    reference = tiny_target()
    expected = reference.generate(prompt, do_sample=False, max_new_tokens=16)
    head = tiny_head(reference)
    target = tiny_target()
    if offload == "cpu_offload":
        cpu_offload(target, execution_device="cpu")
    elif offload == "disk_offload":
        disk_offload(target, str(tmp_path), execution_device="cpu")
    else:
        # Embeddings and lm_head on "disk", layers on the CPU: `target.device` reads `meta`.
        device_map = {"model.embed_tokens": "disk", "model.layers": "cpu", "model.norm": "cpu",
                      "model.rotary_emb": "cpu", "lm_head": "disk"}
        target = dispatch_model(target, device_map=device_map, offload_dir=str(tmp_path))
    assert target.device.type == "meta"
    jetspec_hf.enable(target)
    got = target.generate(prompt, do_sample=False, max_new_tokens=16, assistant_model=head, tree_budget=16)
    assert torch.equal(got, expected)
