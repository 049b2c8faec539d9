"""One tree forward must give, at every node, the target's logits for the path root→node."""

import pytest
import torch
from transformers.cache_utils import DynamicCache

from jetspec_hf.generation.cache import keep_accepted_paths
from jetspec_hf.generation.capture import TappedLayerCapture, install_capture_hooks
from jetspec_hf.generation.tree import DraftTree
from jetspec_hf.generation.verification import prefill, verify_tree
from tiny_models import random_prompt, tiny_target

TREE = DraftTree(tokens=[11, 20, 21, 30, 31, 40], parents=[-1, 0, 0, 1, 1, 3], depths=[0, 1, 1, 2, 2, 3])
LAYERS = [0, 2]


def _path_to(tree, node):
    path = []
    while node != -1:
        path.append(node)
        node = tree.parents[node]
    return path[::-1]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_tree_logits_and_features_equal_those_of_each_path_alone(attn_implementation):
    target = tiny_target(attn_implementation=attn_implementation)
    prefix = random_prompt(0, 9)
    cache = DynamicCache(config=target.config)
    install_capture_hooks(target.model.layers)
    with TappedLayerCapture(target.model.layers, LAYERS) as capture, torch.no_grad():
        _, prefix_features = prefill(target, prefix, cache, capture)
        node_logits, node_features = verify_tree(target, TREE, prefix.shape[1], cache, capture, prefix.device)
    assert cache.get_seq_length() == prefix.shape[1] + len(TREE)
    for node in range(len(TREE)):
        path_ids = torch.tensor([[TREE.tokens[n] for n in _path_to(TREE, node)]])
        with torch.no_grad():
            full = target(torch.cat([prefix, path_ids], dim=1), output_hidden_states=True)
        torch.testing.assert_close(node_logits[node], full.logits[0, -1], rtol=1e-4, atol=1e-4)
        expected_features = torch.cat([full.hidden_states[layer + 1][0, -1] for layer in LAYERS])
        torch.testing.assert_close(node_features[0, node], expected_features, rtol=1e-4, atol=1e-4)
    expected_prefix = torch.cat([full.hidden_states[layer + 1][0, : prefix.shape[1]] for layer in LAYERS], dim=-1)
    torch.testing.assert_close(prefix_features[0], expected_prefix, rtol=1e-4, atol=1e-4)


def test_cache_compaction_keeps_exactly_the_accepted_path():
    target = tiny_target()
    prefix = random_prompt(1, 7)
    cache = DynamicCache(config=target.config)
    install_capture_hooks(target.model.layers)
    with TappedLayerCapture(target.model.layers, LAYERS) as capture, torch.no_grad():
        prefill(target, prefix, cache, capture)
        verify_tree(target, TREE, prefix.shape[1], cache, capture, prefix.device)
    accepted = [0, 1, 3, 5]  # 11 → 20 → 30 → 40, not in contiguous slots
    keep_accepted_paths(cache, prefix.shape[1], [accepted])

    reference = DynamicCache(config=target.config)
    path_ids = torch.tensor([[TREE.tokens[n] for n in accepted]])
    with torch.no_grad():
        target(torch.cat([prefix, path_ids], dim=1), cache=reference, use_cache=True)
    assert cache.get_seq_length() == reference.get_seq_length() == prefix.shape[1] + len(accepted)
    for mine, expected in zip(cache.layers, reference.layers):
        torch.testing.assert_close(mine.keys, expected.keys, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mine.values, expected.values, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [2, 3])
def test_a_small_tree_on_a_cpu_is_verified_padded_and_its_nodes_get_their_own_path_s_logits(size):
    from jetspec_hf.generation.verification import CPU_MIN_TREE_ROWS

    target = tiny_target()
    prefix = random_prompt(2, 8)
    tree = TREE.truncated(size)
    cache = DynamicCache(config=target.config)
    install_capture_hooks(target.model.layers)
    with TappedLayerCapture(target.model.layers, LAYERS) as capture, torch.no_grad():
        prefill(target, prefix, cache, capture)
        node_logits, _ = verify_tree(target, tree, prefix.shape[1], cache, capture, prefix.device)
    # Padded up to CPU_MIN_TREE_ROWS nodes (the cache grows by as many columns); the real nodes are exact.
    assert node_logits.shape[0] == CPU_MIN_TREE_ROWS > size
    assert cache.get_seq_length() == prefix.shape[1] + CPU_MIN_TREE_ROWS
    for node in range(size):
        path_ids = torch.tensor([[tree.tokens[n] for n in _path_to(tree, node)]])
        with torch.no_grad():
            full = target(torch.cat([prefix, path_ids], dim=1))
        torch.testing.assert_close(node_logits[node], full.logits[0, -1], rtol=1e-4, atol=1e-4)


def test_truncate_cache_drops_the_columns_past_a_length_and_nothing_at_that_length():
    from jetspec_hf.generation.cache import truncate_cache

    target = tiny_target()
    cache = DynamicCache(config=target.config)
    with torch.no_grad():
        target(random_prompt(3, 9), cache=cache, use_cache=True)
    truncate_cache(cache, 9)  # `crop(0)` would have emptied it
    assert cache.get_seq_length() == 9
    truncate_cache(cache, 5)
    assert cache.get_seq_length() == 5
