"""Static caches, and the compiled verify forward that plain decoding's compile settings turn on."""

import pytest
import torch
from transformers import CompileConfig, StaticCache

from tiny_models import random_prompt


@pytest.mark.parametrize("budget", [1, 6, 64, "auto"])
def test_a_static_cache_gives_plain_tokens_and_the_cache_plain_decoding_leaves(pair, budget):
    target, head = pair
    for seed, length in ((0, 1), (1, 7), (2, 15)):
        prompt = random_prompt(seed, length)
        for new_tokens in (1, 5, 19):
            plain = target.generate(prompt, do_sample=False, max_new_tokens=new_tokens, return_dict_in_generate=True,
                                    cache_implementation="static")
            got = target.generate(prompt, do_sample=False, max_new_tokens=new_tokens, assistant_model=head,
                                  tree_budget=budget, cache_implementation="static", return_dict_in_generate=True)
            assert torch.equal(got.sequences, plain.sequences)
            # The trees were cut to the static cache's room, and the returned cache holds what plain's does.
            assert int(got.cache.get_seq_length()) == int(plain.cache.get_seq_length())
            rows = int(plain.cache.get_seq_length())
            for mine, expected in zip(got.cache.layers, plain.cache.layers):
                torch.testing.assert_close(mine.keys[:, :, :rows], expected.keys[:, :, :rows], rtol=1e-4, atol=1e-5)


def test_a_passed_static_cache_continues_across_turns_on_either_path(pair):
    target, head = pair
    cache = StaticCache(config=target.config, max_cache_len=64)
    first = target.generate(random_prompt(3, 6), cache=cache, do_sample=False, max_new_tokens=6,
                            assistant_model=head, return_dict_in_generate=True)
    # Allocated outside inference mode: plain decoding can go on updating it in place.
    assert not first.cache.layers[0].keys.is_inference()
    turn = torch.cat([first.sequences, random_prompt(4, 3)], dim=1)
    fresh = target.generate(turn, do_sample=False, max_new_tokens=5)
    continued = target.generate(turn, cache=first.cache, do_sample=False, max_new_tokens=5)
    assert torch.equal(continued, fresh)
    last = torch.cat([continued, random_prompt(5, 2)], dim=1)
    again = target.generate(last, cache=first.cache, do_sample=False, max_new_tokens=5, assistant_model=head)
    assert torch.equal(again, target.generate(last, do_sample=False, max_new_tokens=5))


def test_the_compiled_verify_gives_the_same_tokens(pair):
    # The same compile settings that make plain decoding compile its steps (a static cache, and here a
    # `compile_config` that allows the CPU) compile the verify forward; dynamo's "eager" backend keeps this quick.
    target, head = pair
    compile_config = CompileConfig(backend="eager")
    compile_config._compile_all_devices = True
    prompt = random_prompt(4, 7)
    plain = target.generate(prompt, do_sample=False, max_new_tokens=10)
    got = target.generate(prompt, do_sample=False, max_new_tokens=10, assistant_model=head, tree_budget=4,
                          cache_implementation="static", compile_config=compile_config)
    assert torch.equal(got, plain)
    assert hasattr(target, "_compiled_call")  # the forward plain decoding would compile is the one that ran


def test_a_static_cache_for_a_batch_is_refused(pair):
    target, head = pair
    batch = torch.cat([random_prompt(0, 5), random_prompt(1, 5)])
    with pytest.raises(ValueError, match="static cache is supported for one sequence"):
        target.generate(batch, max_new_tokens=4, assistant_model=head, cache_implementation="static")
