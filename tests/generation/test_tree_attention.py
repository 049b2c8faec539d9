"""Tree attention (prefix and tree parts merged by LSE) against full-mask sdpa, and its routing through backends."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import random_prompt, tiny_target
from transformers import DynamicCache, StaticCache
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from jetspec_hf.generation import tree_attention as tree_attention_module
from jetspec_hf.generation.tree import DraftTree
from jetspec_hf.generation.tree_attention import (
    install_tree_attention,
    routes_tree_attention,
    tree_attention_forward,
    uninstall_tree_attention,
)
from jetspec_hf.generation.tree_mask import TreeAttentionMask

# ------------------------------------------------------------------------------------------------------ helpers


def random_tree(num_nodes: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """Random parents (a parent precedes its children; node 0 is the root) and the depths that go with them."""
    parents, depths = [-1], [0]
    for node in range(1, num_nodes):
        parent = int(torch.randint(0, node, (1,), generator=generator))
        parents.append(parent)
        depths.append(depths[parent] + 1)
    return parents, depths


def ancestor_matrix(parents: list[int]) -> np.ndarray:
    """Host-side bool `(N, N)`: `[n, m]` is True when m is n or one of its ancestors (the loop's own builder)."""
    return DraftTree(tokens=[0] * len(parents), parents=parents, depths=[0] * len(parents)).ancestor_matrix()


def full_mask_reference(query, key, value, prefix_length, ancestors, prefix_key_mask, scale):
    """The computation being replaced: one sdpa call over all P + N keys with the materialised bool mask."""
    batch, num_nodes = query.shape[0], query.shape[2]
    visible = torch.ones(batch, 1, num_nodes, prefix_length + num_nodes, dtype=torch.bool)
    visible[..., prefix_length:] = ancestors
    if prefix_key_mask is not None:
        visible[..., :prefix_length] = prefix_key_mask[:, None, None, :]
    keys, values = key[:, :, : prefix_length + num_nodes], value[:, :, : prefix_length + num_nodes]
    output = F.scaled_dot_product_attention(query, keys, values, attn_mask=visible, scale=scale, enable_gqa=True)
    return output.transpose(1, 2)


# ------------------------------------------------------------------------------------ (a) the function itself

ROUTES = ["cpu_one_call", "cpu_split", "torch_split"]


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch):
    """Forces one of the exact routes of `tree_attention_forward` (see its docstring) whatever the prefix length."""
    if request.param == "cpu_one_call":
        monkeypatch.setattr(tree_attention_module, "CPU_SPLIT_FROM_PREFIX_LENGTH", 1 << 30)
    else:
        monkeypatch.setattr(tree_attention_module, "CPU_SPLIT_FROM_PREFIX_LENGTH", 0)
    if request.param == "torch_split":  # the off-CPU fallback: hide the CPU kernel
        monkeypatch.setattr(tree_attention_module, "_cpu_flash_attention", None)
    return request.param


PREFIX_LENGTHS = [0, 1, 7, 300, 2048]
NODE_COUNTS = [1, 2, 17, 64, 256]
HEAD_LAYOUTS = [(4, 1), (4, 2), (4, 4), (8, 1), (8, 2), (8, 4)]  # (query heads, key/value heads)


@pytest.mark.parametrize("with_holes", [False, True], ids=["no_holes", "holes"])
@pytest.mark.parametrize("prefix_length", PREFIX_LENGTHS)
@pytest.mark.parametrize("num_nodes", NODE_COUNTS)
def test_matches_full_mask_sdpa(route, prefix_length, num_nodes, with_holes):
    # Each cell draws the rest of its shape from its own seed: batch, GQA layout, head dim, and garbage rows after
    # P + N as a static cache leaves them. Holes: a per-row prefix key mask, one batch row entirely holes.
    generator = torch.Generator().manual_seed(1000 * prefix_length + 10 * num_nodes + with_holes)
    pick = lambda options: options[int(torch.randint(0, len(options), (1,), generator=generator))]  # noqa: E731
    batch = pick([1, 2, 3])
    query_heads, kv_heads = pick(HEAD_LAYOUTS)
    head_dim = pick([16, 64])
    garbage_rows = pick([0, 5, 40])

    cache_rows = prefix_length + num_nodes + garbage_rows
    query = torch.randn(batch, query_heads, num_nodes, head_dim, generator=generator)
    key = torch.randn(batch, kv_heads, cache_rows, head_dim, generator=generator)
    value = torch.randn(batch, kv_heads, cache_rows, head_dim, generator=generator)
    key[:, :, prefix_length + num_nodes :] = 1e4  # would dominate any softmax that read it
    value[:, :, prefix_length + num_nodes :] = float("nan")

    parents, _ = random_tree(num_nodes, generator)
    ancestors = ancestor_matrix(parents)
    prefix_key_mask = None
    if with_holes:
        prefix_key_mask = torch.rand(batch, prefix_length, generator=generator) > 0.3
        prefix_key_mask[0] = False  # one batch row whose whole prefix is holes: only its tree part counts

    mask = TreeAttentionMask.from_ancestors(ancestors, prefix_length, "cpu", prefix_key_mask)
    output, weights = tree_attention_forward(None, query, key, value, mask, scaling=head_dim**-0.5)
    expected = full_mask_reference(
        query, key, value, prefix_length, torch.from_numpy(ancestors), prefix_key_mask, head_dim**-0.5
    )

    assert weights is None
    assert output.shape == (batch, num_nodes, query_heads, head_dim)
    torch.testing.assert_close(output, expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("tree_mask_kind", ["bool", "additive", "batched_additive"])
def test_mask_forms(route, tree_mask_kind):
    generator = torch.Generator().manual_seed(7)
    batch, query_heads, kv_heads, head_dim, prefix_length, num_nodes = 2, 8, 2, 32, 129, 23
    query = torch.randn(batch, query_heads, num_nodes, head_dim, generator=generator)
    key = torch.randn(batch, kv_heads, prefix_length + num_nodes, head_dim, generator=generator)
    value = torch.randn(batch, kv_heads, prefix_length + num_nodes, head_dim, generator=generator)
    ancestors = torch.from_numpy(ancestor_matrix(random_tree(num_nodes, generator)[0]))
    prefix_key_mask = torch.rand(batch, prefix_length, generator=generator) > 0.5
    prefix_key_mask[1] = False

    hidden = torch.zeros(num_nodes, num_nodes).masked_fill(~ancestors, torch.finfo(torch.float32).min)
    tree_mask = {
        "bool": ancestors,
        "additive": hidden,
        "batched_additive": hidden.expand(batch, 1, num_nodes, num_nodes),
    }[tree_mask_kind]
    mask = TreeAttentionMask(prefix_length, tree_mask, prefix_key_mask)
    output, _ = tree_attention_forward(None, query, key, value, mask)  # scaling=None means head_dim ** -0.5

    expected = full_mask_reference(query, key, value, prefix_length, ancestors, prefix_key_mask, head_dim**-0.5)
    torch.testing.assert_close(output, expected, atol=2e-5, rtol=0)


def test_per_row_tree_masks_differ_by_batch_row(route):
    # A (B, 1, N, N) tree mask gives each batch row its own tree.
    generator = torch.Generator().manual_seed(3)
    num_nodes, prefix_length = 12, 40
    trees = [torch.from_numpy(ancestor_matrix(random_tree(num_nodes, generator)[0])) for _ in range(2)]
    query = torch.randn(2, 4, num_nodes, 16, generator=generator)
    key = torch.randn(2, 2, prefix_length + num_nodes, 16, generator=generator)
    value = torch.randn(2, 2, prefix_length + num_nodes, 16, generator=generator)
    mask = TreeAttentionMask(prefix_length, torch.stack(trees)[:, None])
    output, _ = tree_attention_forward(None, query, key, value, mask)
    for row, ancestors in enumerate(trees):
        expected = full_mask_reference(
            query[row : row + 1], key[row : row + 1], value[row : row + 1], prefix_length, ancestors, None, 0.25
        )
        torch.testing.assert_close(output[row : row + 1], expected, atol=2e-5, rtol=0)


def test_one_mask_serves_calls_with_different_head_layouts(route):
    # Layers share the mask object and the biases it caches; a different GQA group must not reuse a wrong one.
    generator = torch.Generator().manual_seed(11)
    ancestors = torch.from_numpy(ancestor_matrix(random_tree(9, generator)[0]))
    mask = TreeAttentionMask(20, ancestors, torch.rand(2, 20, generator=generator) > 0.4)
    for query_heads, kv_heads in [(8, 4), (8, 1), (8, 2), (8, 4)]:
        query = torch.randn(2, query_heads, 9, 16, generator=generator)
        key = torch.randn(2, kv_heads, 29, 16, generator=generator)
        value = torch.randn(2, kv_heads, 29, 16, generator=generator)
        output, _ = tree_attention_forward(None, query, key, value, mask)
        expected = full_mask_reference(query, key, value, 20, ancestors, mask.prefix_key_mask, 0.25)
        torch.testing.assert_close(output, expected, atol=2e-5, rtol=0)


def test_bfloat16_close_to_fp32_reference(route):
    generator = torch.Generator().manual_seed(5)
    query = torch.randn(1, 4, 16, 64, generator=generator)
    key = torch.randn(1, 2, 316, 64, generator=generator)
    value = torch.randn(1, 2, 316, 64, generator=generator)
    ancestors = torch.from_numpy(ancestor_matrix(random_tree(16, generator)[0]))
    mask = TreeAttentionMask(300, ancestors)
    output, _ = tree_attention_forward(None, query.bfloat16(), key.bfloat16(), value.bfloat16(), mask)
    expected = full_mask_reference(query, key, value, 300, ancestors, None, 0.125)
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output.float(), expected, atol=3e-2, rtol=0)


def test_hand_made_rows_that_see_less_than_a_node_does(route):
    # A real node sees itself; a padded slot in a batched tree may see nothing of the tree, or nothing at all.
    query, key, value = torch.randn(1, 4, 3, 16), torch.randn(1, 2, 10, 16), torch.randn(1, 2, 10, 16)
    tree_mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    output, _ = tree_attention_forward(None, query, key, value, TreeAttentionMask(7, tree_mask))
    prefix_only = F.scaled_dot_product_attention(query, key[:, :, :7], value[:, :, :7], enable_gqa=True)
    torch.testing.assert_close(output[:, 1], prefix_only.transpose(1, 2)[:, 1], atol=2e-6, rtol=0)

    all_holes = torch.zeros(1, 7, dtype=torch.bool)
    output, _ = tree_attention_forward(None, query, key, value, TreeAttentionMask(7, tree_mask, all_holes))
    assert torch.isfinite(output).all()  # row 1 sees no key at all: finite, never NaN


def test_refuses_what_it_cannot_compute():
    query, key, value = torch.randn(1, 4, 3, 16), torch.randn(1, 2, 10, 16), torch.randn(1, 2, 10, 16)
    mask = TreeAttentionMask(7, torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="fewer than"):
        tree_attention_forward(None, query, key[:, :, :9], value[:, :, :9], mask)
    with pytest.raises(ValueError, match="3 nodes but the forward has 2"):
        tree_attention_forward(None, query[:, :, :2], key, value, mask)
    with pytest.raises(ValueError, match="dropout"):
        tree_attention_forward(None, query, key, value, mask, dropout=0.1)
    with pytest.raises(NotImplementedError, match="softcap"):
        tree_attention_forward(None, query, key, value, mask, softcap=30.0)
    with pytest.raises(NotImplementedError, match="sliding"):
        tree_attention_forward(None, query, key, value, mask, sliding_window=8)
    tree_attention_forward(None, query, key, value, mask, sliding_window=10)  # a window covering every key is fine
    with pytest.raises(ValueError, match="prefix_key_mask covers"):
        TreeAttentionMask(7, torch.eye(3, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool))


def test_to_additive_mask_is_todays_mask():
    ancestors = torch.from_numpy(ancestor_matrix([-1, 0, 0, 1]))
    holes = torch.tensor([[True, False, True], [True, True, True]])
    additive = TreeAttentionMask(3, ancestors, holes).to_additive_mask(torch.float32)
    hidden = torch.finfo(torch.float32).min
    assert additive.shape == (2, 1, 4, 7)
    assert (additive[0, 0, :, 1] == hidden).all() and (additive[1, 0, :, :3] == 0).all()
    assert torch.equal(additive[:, 0, :, 3:] == 0, ancestors.expand(2, 4, 4))


# ------------------------------------------------------------------------------------ (b)-(d) inside a model

CAUSAL_ONLY = "jetspec_test_causal_only"
STAND_IN_CALLS = {"count": 0}
_count_lock = threading.Lock()


def causal_only_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Stand-in for a flash kernel: causal attention (bottom-right aligned, like flash-attn) plus 2D key padding.

    It refuses every other mask, so a tree mask that reaches this "flash" backend fails the test.
    """
    is_padding_mask = isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2
    if attention_mask is not None and not is_padding_mask:
        raise AssertionError(f"{CAUSAL_ONLY} got a non-causal mask: {type(attention_mask).__name__}")
    with _count_lock:
        STAND_IN_CALLS["count"] += 1
    query_length, key_length = query.shape[2], key.shape[2]
    offset = key_length - query_length
    visible = torch.arange(key_length)[None, :] <= torch.arange(query_length)[:, None] + offset
    visible = visible[None, None]
    if is_padding_mask:
        visible = visible & attention_mask[:, None, None, -key_length:].bool()
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=visible, scale=scaling, enable_gqa=True)
    return output.transpose(1, 2).contiguous(), None


@pytest.fixture(scope="module", autouse=True)
def routing_installed():
    """Register the stand-in (as flash backends are: attention + mask builder) and install the tree routing."""
    AttentionInterface.register(CAUSAL_ONLY, causal_only_attention)
    AttentionMaskInterface.register(CAUSAL_ONLY, flash_attention_mask)
    install_tree_attention()
    yield
    uninstall_tree_attention()
    AttentionInterface._global_mapping.pop(CAUSAL_ONLY, None)
    AttentionMaskInterface._global_mapping.pop(CAUSAL_ONLY, None)


@pytest.fixture
def tree_calls(monkeypatch):
    """Counts calls of the tree function made through the dispatcher."""
    calls = {"count": 0}
    original = tree_attention_module.tree_attention_forward

    def counting(*args, **kwargs):
        with _count_lock:
            calls["count"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(tree_attention_module, "tree_attention_forward", counting)
    return calls


def tree_inputs(prefix_length: int, num_nodes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    parents, depths = random_tree(num_nodes, generator)
    tokens = torch.randint(3, 96, (1, num_nodes), generator=generator)
    positions = torch.tensor([depths]) + prefix_length
    return tokens, positions, ancestor_matrix(parents)


@torch.no_grad()
def verify_logits(model, prompt, tokens, positions, attention_mask, cache=None):
    """Prefill `prompt` into a cache, then run the tree tokens on top with `attention_mask`."""
    cache = DynamicCache(config=model.config) if cache is None else cache
    model(input_ids=prompt, cache=cache, use_cache=True)
    return model(input_ids=tokens, position_ids=positions, attention_mask=attention_mask, cache=cache).logits


@pytest.fixture(scope="module")
def sdpa_target():
    return tiny_target("sdpa")


@pytest.mark.parametrize("prefix_length,num_nodes", [(1, 1), (9, 6), (40, 31)])
def test_model_verify_matches_materialised_mask(sdpa_target, tree_calls, route, prefix_length, num_nodes):
    prompt = random_prompt(seed=prefix_length, length=prefix_length)
    tokens, positions, ancestors = tree_inputs(prefix_length, num_nodes, seed=num_nodes)
    mask = TreeAttentionMask.from_ancestors(ancestors, prefix_length, "cpu")

    expected = verify_logits(sdpa_target, prompt, tokens, positions, mask.to_additive_mask(torch.float32))
    assert tree_calls["count"] == 0
    logits = verify_logits(sdpa_target, prompt, tokens, positions, {"full_attention": mask})
    assert tree_calls["count"] == sdpa_target.config.num_hidden_layers
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_model_verify_on_a_static_cache_ignores_the_rows_after_the_tree(sdpa_target, route):
    prefix_length, num_nodes = 20, 13
    prompt = random_prompt(seed=1, length=prefix_length)
    tokens, positions, ancestors = tree_inputs(prefix_length, num_nodes, seed=2)
    mask = TreeAttentionMask.from_ancestors(ancestors, prefix_length, "cpu")
    expected = verify_logits(sdpa_target, prompt, tokens, positions, mask.to_additive_mask(torch.float32))

    cache = StaticCache(config=sdpa_target.config, max_cache_len=64)
    with torch.no_grad():
        sdpa_target(input_ids=prompt, cache=cache, use_cache=True)
        for layer in cache.layers:  # the free space of a static cache holds whatever a previous round left
            layer.keys[:, :, prefix_length:].normal_(0.0, 100.0)
            layer.values[:, :, prefix_length:].normal_(0.0, 100.0)
        logits = sdpa_target(
            input_ids=tokens, position_ids=positions, attention_mask={"full_attention": mask}, cache=cache
        ).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_flash_like_target_routes_tree_masks_and_keeps_its_kernel_otherwise(sdpa_target, tree_calls):
    stand_in_target = tiny_target(CAUSAL_ONLY)  # same seed, so the same weights as `sdpa_target`
    layers = stand_in_target.config.num_hidden_layers
    prompt = random_prompt(seed=3, length=25)
    tokens, positions, ancestors = tree_inputs(25, 17, seed=4)
    mask = TreeAttentionMask.from_ancestors(ancestors, 25, "cpu")
    expected = verify_logits(sdpa_target, prompt, tokens, positions, mask.to_additive_mask(torch.float32))

    STAND_IN_CALLS["count"] = 0
    cache = DynamicCache(config=stand_in_target.config)
    with torch.no_grad():
        stand_in_target(input_ids=prompt, cache=cache, use_cache=True)  # prefill: the target's own kernel
        assert (STAND_IN_CALLS["count"], tree_calls["count"]) == (layers, 0)
        logits = stand_in_target(
            input_ids=tokens, position_ids=positions, attention_mask={"full_attention": mask}, cache=cache
        ).logits  # verify: the tree function, never the "flash" kernel
    assert (STAND_IN_CALLS["count"], tree_calls["count"]) == (layers, layers)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)

    # A plain generate() on the same target afterwards still runs entirely on its own kernel, unchanged.
    plain = stand_in_target.generate(prompt, max_new_tokens=5, do_sample=False)
    assert STAND_IN_CALLS["count"] == layers + 5 * layers
    assert tree_calls["count"] == layers
    assert torch.equal(plain, sdpa_target.generate(prompt, max_new_tokens=5, do_sample=False))
    assert stand_in_target.config._attn_implementation == CAUSAL_ONLY


def test_the_stand_in_would_catch_a_tree_mask():
    # Direct calls: the stand-in refuses both a materialised tree mask and a TreeAttentionMask.
    query, key, value = torch.randn(1, 4, 3, 16), torch.randn(1, 2, 10, 16), torch.randn(1, 2, 10, 16)
    tree = TreeAttentionMask(7, torch.eye(3, dtype=torch.bool))
    for bad_mask in (tree, tree.to_additive_mask(torch.float32)):
        with pytest.raises(AssertionError, match="non-causal mask"):
            causal_only_attention(None, query, key, value, bad_mask)

    # Through a model with routing removed, the tree verify reaches the stand-in and fails.
    target = tiny_target(CAUSAL_ONLY)
    prompt = random_prompt(seed=3, length=7)
    tokens, positions, ancestors = tree_inputs(7, 3, seed=4)
    uninstall_tree_attention()
    try:
        assert not routes_tree_attention(CAUSAL_ONLY)
        with pytest.raises(AssertionError, match="non-causal mask"):
            mask = TreeAttentionMask.from_ancestors(ancestors, 7, "cpu")
            verify_logits(target, prompt, tokens, positions, {"full_attention": mask})
    finally:
        install_tree_attention()
    assert routes_tree_attention(CAUSAL_ONLY)


def test_install_is_idempotent_and_picks_up_new_backends():
    assert install_tree_attention() == []
    for name, function in AttentionInterface._global_mapping.items():
        original = getattr(function, "_jetspec_tree_attention_original")
        assert not hasattr(original, "_jetspec_tree_attention_original"), f"{name} wrapped twice"
    assert routes_tree_attention("sdpa") and routes_tree_attention("flash_attention_2")
    assert routes_tree_attention("flex_attention")
    assert not routes_tree_attention("eager")  # each model's own default: materialise the mask instead

    AttentionInterface.register("jetspec_test_late_backend", causal_only_attention)
    try:
        assert not routes_tree_attention("jetspec_test_late_backend")
        assert install_tree_attention() == ["jetspec_test_late_backend"]
        assert routes_tree_attention("jetspec_test_late_backend")
        assert ALL_ATTENTION_FUNCTIONS["jetspec_test_late_backend"].__wrapped__ is causal_only_attention
    finally:
        AttentionInterface._global_mapping.pop("jetspec_test_late_backend")


def test_dispatcher_passes_other_masks_through_untouched():
    seen = []

    def recording(module, query, key, value, attention_mask, **kwargs):
        seen.append((attention_mask, kwargs))
        return "original", None

    dispatcher = tree_attention_module._tree_dispatcher(recording)
    padding = torch.ones(1, 10, dtype=torch.bool)
    assert dispatcher(None, None, None, None, padding, position_ids=3, cu_seq_lens_q=4)[0] == "original"
    assert seen[0][0] is padding and seen[0][1] == {"position_ids": 3, "cu_seq_lens_q": 4}

    # On the tree path, flash-only kwargs are ignored rather than passed to a kernel.
    query, key, value = torch.randn(1, 4, 3, 16), torch.randn(1, 2, 10, 16), torch.randn(1, 2, 10, 16)
    tree = TreeAttentionMask(7, torch.eye(3, dtype=torch.bool))
    output, _ = dispatcher(
        None, query, key, value, tree, position_ids=torch.arange(3), cu_seq_lens_q=torch.tensor([0, 3]),
        max_length_q=3, is_causal=True, dropout=0.0, scaling=0.25,
    )
    torch.testing.assert_close(output, tree_attention_forward(None, query, key, value, tree, scaling=0.25)[0])
    assert len(seen) == 1


def test_eager_target_takes_the_materialised_mask(sdpa_target):
    # Eager is not routed; the lead passes `to_additive_mask` for it, which gives the same logits.
    eager_target = tiny_target("eager")
    prompt = random_prompt(seed=5, length=30)
    tokens, positions, ancestors = tree_inputs(30, 20, seed=6)
    mask = TreeAttentionMask.from_ancestors(ancestors, 30, "cpu")
    expected = verify_logits(sdpa_target, prompt, tokens, positions, {"full_attention": mask})
    logits = verify_logits(eager_target, prompt, tokens, positions, mask.to_additive_mask(torch.float32))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["sdpa", CAUSAL_ONLY])
def test_plain_and_tree_forwards_from_two_threads(sdpa_target, backend):
    target = sdpa_target if backend == "sdpa" else tiny_target(CAUSAL_ONLY)
    prompt = random_prompt(seed=8, length=33)
    tokens, positions, ancestors = tree_inputs(33, 24, seed=9)
    tree_mask = {"full_attention": TreeAttentionMask.from_ancestors(ancestors, 33, "cpu")}
    plain_input = torch.cat([prompt, tokens], dim=1)
    with torch.no_grad():
        plain_expected = target(input_ids=plain_input).logits
    tree_expected = verify_logits(target, prompt, tokens, positions, tree_mask)

    start = threading.Barrier(2)
    failures = []

    def repeat(check):
        try:
            start.wait()
            for _ in range(15):
                check()
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    def plain_forward():
        with torch.no_grad():
            torch.testing.assert_close(target(input_ids=plain_input).logits, plain_expected, atol=1e-5, rtol=0)

    def tree_forward():
        logits = verify_logits(target, prompt, tokens, positions, copy.copy(tree_mask))
        torch.testing.assert_close(logits, tree_expected, atol=1e-5, rtol=0)

    threads = [threading.Thread(target=repeat, args=(check,)) for check in (plain_forward, tree_forward)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_whole_tree_path_on_a_flash_like_target_equals_plain(moe, tree_calls):
    # Prefill and plain decoding run on the target's own ("flash") kernel; every verify forward on the tree
    # function (the MoE model takes no prepared mask dict, so the mask travels as a keyword there).
    import jetspec_hf
    from tiny_models import tiny_head

    stand_in_target = jetspec_hf.enable(tiny_target(CAUSAL_ONLY, moe=moe))
    head = tiny_head(stand_in_target)
    reference = tiny_target("sdpa", moe=moe)  # same seed, same weights
    for seed, length in ((0, 1), (1, 6), (2, 19)):
        prompt = random_prompt(seed, length)
        expected = reference.generate(prompt, do_sample=False, max_new_tokens=14)
        calls_before = tree_calls["count"]
        got = stand_in_target.generate(prompt, do_sample=False, max_new_tokens=14, assistant_model=head,
                                       tree_budget=16, return_dict_in_generate=True)
        assert torch.equal(got.sequences, expected)
        verify_forwards = len(got.accepted_lengths)
        assert tree_calls["count"] - calls_before == verify_forwards * stand_in_target.config.num_hidden_layers
    assert stand_in_target.config._attn_implementation == CAUSAL_ONLY
