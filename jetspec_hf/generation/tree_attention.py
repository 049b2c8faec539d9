"""Tree attention for the verify forward: prefix and tree attended separately, merged by log-sum-exp.

During a verify the target attends with N tree-node queries to a KV cache holding P committed positions followed
by the N node rows. Every node sees the whole prefix and exactly its own ancestors (itself included). Instead of
materialising an `(N, P + N)` mask, `tree_attention_forward` splits the keys at P:

* prefix part: the N queries against rows `[0, P)` with no mask (or only a per-row key mask for cache holes),
  which a fused kernel can run: `flash_attn_func` on CUDA, the CPU flash kernel on CPU, both returning the LSE;
* tree part: the N queries against rows `[P, P + N)` with the `N × N` ancestor mask, small;

and merges the two softmaxes exactly: with per-query log-sum-exps `a` (prefix) and `b` (tree),
`out = σ(a − b) · prefix_out + (1 − σ(a − b)) · tree_out`.

GQA never repeats K/V: the g query heads of a kv group are folded into the query-length axis.

On CPU, below `CPU_SPLIT_FROM_PREFIX_LENGTH` the second kernel call and the merge cost more than they save, so
short prefixes run as ONE CPU-kernel call over rows `[0, P + N)` with a folded `(g*N, P + N)` bias built once per
verify (not per layer). Both routes are exact; scripts/bench_tree_attention.py measures them.

Routing needs no change to any model: `Qwen3Model.forward` passes a dict `{"full_attention": X}` unchanged to
every layer's attention function, and `install_tree_attention` wraps each registered attention backend so that a
`TreeAttentionMask` goes to `tree_attention_forward` and everything else reaches the original backend untouched.
`eager` is not a registered backend (it is each model's own default) and is not routed; see `routes_tree_attention`.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from .tree_mask import TreeAttentionMask

try:  # The CUDA prefix kernel; optional (the `flash` extra), never importable on the CPU build.
    from flash_attn import flash_attn_func as _flash_attn_func
except Exception:  # ImportError, or a broken build raising anything at import time.
    _flash_attn_func = None

# The CPU flash kernel returns (output, logsumexp); it is a private aten op, so look it up defensively.
_cpu_flash_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)

# On CPU, prefixes at least this long take the split route; shorter ones one kernel call with a full bias. Measured
# with scripts/bench_tree_attention.py (bundled target's shapes, one thread): one call wins by a fixed ~30 µs per
# layer (a kernel launch plus the merge) at short prefixes, the two are even from about 2k on, where the split also
# skips building a (g*N, P + N) bias per verify.
CPU_SPLIT_FROM_PREFIX_LENGTH = 2048

# flash-attn 2 kernels take half precision and head dims up to 256 only.
_FLASH_ATTN_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_ATTN_MAX_HEAD_DIM = 256


def tree_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: TreeAttentionMask,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of N tree-node queries over a KV cache of P prefix rows followed by the N node rows.

    Same convention as transformers' attention interface functions (see `sdpa_attention_forward`).

    Routes, all exact: on CPU, one kernel call with a folded full bias when P < `CPU_SPLIT_FROM_PREFIX_LENGTH`,
    else the split (CPU kernel for both parts); on CUDA, the split with flash-attn for the prefix when installed
    and the inputs are half precision without holes; everywhere else, the split in plain fp32 torch.

    Args:
        module: the calling attention layer (unused beyond the convention).
        query: `(B, Hq, N, D)`.
        key, value: `(B, Hkv, S, D)` with `S >= P + N` and `Hq` a multiple of `Hkv` (GQA): rows `[0, P)` are the
            prefix, rows `[P, P + N)` the tree nodes; rows beyond (a static cache's free space) are never read.
        attention_mask: the `TreeAttentionMask` of this verify.
        scaling: softmax scale, `D ** -0.5` when None.
        dropout: must be 0 (verification is inference).
        **kwargs: what layers pass along for other backends (position_ids, cu_seq_lens_*, is_causal, ...); ignored.
            `sliding_window` is accepted only when the window covers every key; `softcap` and `s_aux` are refused.

    Returns:
        `(output, None)` with output `(B, N, Hq, D)` in the query's dtype, like every attention function.
        A query that sees no key at all (possible only with hand-made masks) gets a finite, meaningless output.
    """
    mask = attention_mask
    batch, query_heads, num_nodes, head_dim = query.shape
    kv_heads = key.shape[1]
    prefix_length = mask.prefix_length
    _check_supported(query, key, mask, dropout, kwargs)
    scale = head_dim**-0.5 if scaling is None else scaling
    group = query_heads // kv_heads

    # Fold each kv group's g query heads into the query-length axis: (B, Hkv, g*N, D). Head h uses kv head h // g
    # (as `repeat_kv` orders them), so the keys are never repeated.
    grouped_query = query.reshape(batch, kv_heads, group * num_nodes, head_dim)
    if query.device.type == "cpu" and _cpu_flash_attention is not None and prefix_length < CPU_SPLIT_FROM_PREFIX_LENGTH:
        # Short prefix on CPU: one kernel call beats two plus the merge (see CPU_SPLIT_FROM_PREFIX_LENGTH).
        rows = prefix_length + num_nodes
        output, _ = _cpu_flash_attention(
            grouped_query, key[:, :, :rows], value[:, :, :rows], 0.0, False,
            attn_mask=mask._folded_full_bias(group, query.device), scale=scale,
        )
        return _ungroup(output, query), None

    tree_rows = slice(prefix_length, prefix_length + num_nodes)
    tree_out, tree_lse = _attention_with_lse(
        grouped_query, key[:, :, tree_rows], value[:, :, tree_rows], mask._folded_tree_bias(group, query.device), scale
    )
    if prefix_length == 0:
        output = tree_out
    else:
        prefix_out, prefix_lse = _prefix_attention_with_lse(
            grouped_query,
            key[:, :, :prefix_length],
            value[:, :, :prefix_length],
            mask._prefix_key_bias(query.device),
            scale,
        )
        # Exact softmax over both key sets: the prefix holds exp(a) / (exp(a) + exp(b)) = σ(a − b) of the mass.
        prefix_share = torch.sigmoid(prefix_lse - tree_lse).unsqueeze(-1)
        output = torch.lerp(tree_out.float(), prefix_out.float(), prefix_share)

    return _ungroup(output, query), None


def _ungroup(output: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """(B, Hkv, g*N, D) -> (B, Hq, N, D) -> (B, N, Hq, D) in the query's dtype: what attention functions return."""
    batch, query_heads, num_nodes, head_dim = query.shape
    return output.to(query.dtype).reshape(batch, query_heads, num_nodes, head_dim).transpose(1, 2).contiguous()


def _check_supported(query: torch.Tensor, key: torch.Tensor, mask: TreeAttentionMask, dropout: float, kwargs) -> None:
    """Refuse, loudly, anything the split computation would silently get wrong. Reads shapes only."""
    num_nodes = query.shape[2]
    if mask.num_nodes != num_nodes:
        raise ValueError(f"TreeAttentionMask has {mask.num_nodes} nodes but the forward has {num_nodes} queries")
    if key.shape[2] < mask.prefix_length + num_nodes:
        raise ValueError(
            f"the cache holds {key.shape[2]} rows, fewer than prefix_length + N = {mask.prefix_length + num_nodes}: "
            "the tree rows must be appended to the cache by this forward (pass the cache)"
        )
    if query.shape[1] % key.shape[1]:
        raise ValueError(f"{query.shape[1]} query heads are not a multiple of {key.shape[1]} key/value heads")
    if dropout:
        raise ValueError("tree attention is for inference: dropout must be 0")
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("tree attention supports neither softcap nor attention sinks")
    window = kwargs.get("sliding_window")
    deepest = mask.max_depth if mask.max_depth is not None else num_nodes - 1
    if window is not None and mask.prefix_length + deepest + 1 > window:
        raise NotImplementedError("tree attention ignores sliding windows, and this one does not cover every key")


def _prefix_attention_with_lse(
    grouped_query: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    key_bias: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefix part: flash-attn on CUDA when it can take it (no holes, half precision), else as the tree part."""
    use_flash_attn = (
        _flash_attn_func is not None
        and grouped_query.is_cuda
        and key_bias is None  # flash_attn_func takes no mask; holes go the general way
        and grouped_query.dtype in _FLASH_ATTN_DTYPES
        and grouped_query.shape[-1] <= _FLASH_ATTN_MAX_HEAD_DIM
    )
    if use_flash_attn:
        return _flash_attn_with_lse(grouped_query, prefix_key, prefix_value, scale)
    return _attention_with_lse(grouped_query, prefix_key, prefix_value, key_bias, scale)


def _attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention `(B, H, L, D)` with an optional additive fp32 bias.

    Returns the output and its fp32 LSE `(B, H, L)`: on CPU from one fused kernel, elsewhere from fp32 matmuls.
    """
    if query.device.type == "cpu" and _cpu_flash_attention is not None:
        # aten's CPU flash kernel: (output (B, H, L, D) in the query dtype, natural-log LSE (B, H, L) in fp32).
        # It takes strided K/V slices as they are, and an fp32 bias with half-precision queries.
        output, lse = _cpu_flash_attention(query, key, value, 0.0, False, attn_mask=bias, scale=scale)
        return output, lse
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    lse = torch.logsumexp(scores, dim=-1)  # finite: hidden keys carry the fp32 minimum, not -inf
    return torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), value.float()), lse


def _flash_attn_with_lse(query, key, value, scale):
    """flash-attn 2 on CUDA (NOT exercised by the CPU test suite).

    `flash_attn_func` takes `(B, L, H, D)` (its kernel handles strided inputs whose last dim is contiguous);
    `return_attn_probs=True` with dropout 0 adds the softmax LSE `(B, H, L)` (fp32, natural log) and an empty
    probability tensor, so it costs nothing. Queries are already folded per kv head, so this is plain MHA.
    """
    result = _flash_attn_func(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        dropout_p=0.0,
        softmax_scale=scale,
        causal=False,
        return_attn_probs=True,
    )
    output, lse = result[0], result[1]
    # (B, H, L) in flash-attn 2; the slice guards against builds that pad the LSE's query axis.
    return output.transpose(1, 2), lse[..., : query.shape[2]].float()


# ----------------------------------------------------------------------------------------------------- routing

# The keyword under which a verify forward hands its `TreeAttentionMask` to the attention functions.
TREE_MASK_KWARG = "tree_attention_mask"
# Marks our dispatchers, and keeps the backend each one wraps (for idempotence and uninstall).
_ORIGINAL_ATTRIBUTE = "_jetspec_tree_attention_original"
# Serialises install/uninstall against each other; dispatching itself takes no lock.
_INSTALL_LOCK = threading.Lock()


def _tree_dispatcher(original: Callable) -> Callable:
    """A drop-in for `original` that sends a `TreeAttentionMask` to the tree function, anything else to `original`.

    Decided per call from the mask alone, so it is thread-safe and the same target can serve plain `generate()`
    and tree verifies concurrently. Backend-specific kwargs (position_ids, cu_seq_lens_*, ...) are forwarded to
    `original` untouched, and ignored on the tree path.
    """

    @functools.wraps(original)
    def dispatch(module, query, key, value, attention_mask=None, *args, **kwargs):
        # The tree mask arrives as the layer's mask (models that take a prepared mask dict) or as the keyword
        # `TREE_MASK_KWARG`, which every model forwards from its `forward(**kwargs)` to its attention functions.
        tree_mask = kwargs.pop(TREE_MASK_KWARG, None)
        if tree_mask is None and isinstance(attention_mask, TreeAttentionMask):
            tree_mask = attention_mask
        if tree_mask is not None:
            if args:  # Backends disagree on the order of (dropout, scaling); callers pass them by keyword.
                raise TypeError("pass dropout/scaling by keyword when the mask is a TreeAttentionMask")
            return tree_attention_forward(module, query, key, value, tree_mask, **kwargs)
        return original(module, query, key, value, attention_mask, *args, **kwargs)

    setattr(dispatch, _ORIGINAL_ATTRIBUTE, original)
    return dispatch


def _is_dispatcher(function: Callable) -> bool:
    return hasattr(function, _ORIGINAL_ATTRIBUTE)


def install_tree_attention() -> list[str]:
    """Let every registered attention backend accept a `TreeAttentionMask`. Idempotent and cheap: call it freely.

    Wraps each entry of transformers' global `AttentionInterface` (sdpa, flash_attention_2/3/4, flex_attention,
    paged|eager, hub kernels, custom registrations) and of the shared `ALL_ATTENTION_FUNCTIONS` instance. Names
    registered after a call are picked up by the next call; a backend re-registered over a wrapped one is wrapped
    again. Nothing about any model or config changes. `eager` is each model's own default, not a registered
    backend, so it is not covered: check `routes_tree_attention` and materialise the mask for such targets.

    Returns the names wrapped by this call (empty when everything was already wrapped).
    """
    wrapped = []
    with _INSTALL_LOCK:
        for name, function in list(AttentionInterface._global_mapping.items()):
            if not _is_dispatcher(function):
                AttentionInterface.register(name, _tree_dispatcher(function))
                wrapped.append(name)
        for name, function in list(ALL_ATTENTION_FUNCTIONS._local_mapping.items()):
            if not _is_dispatcher(function):
                ALL_ATTENTION_FUNCTIONS[name] = _tree_dispatcher(function)
                wrapped.append(name)
    return wrapped


def uninstall_tree_attention() -> None:
    """Put the original backends back (for tests). Any in-flight tree verify must have finished."""
    with _INSTALL_LOCK:
        for name, function in list(AttentionInterface._global_mapping.items()):
            if _is_dispatcher(function):
                AttentionInterface.register(name, getattr(function, _ORIGINAL_ATTRIBUTE))
        for name, function in list(ALL_ATTENTION_FUNCTIONS._local_mapping.items()):
            if _is_dispatcher(function):
                ALL_ATTENTION_FUNCTIONS[name] = getattr(function, _ORIGINAL_ATTRIBUTE)


def routes_tree_attention(attn_implementation: str | None) -> bool:
    """Whether a model with this `config._attn_implementation` would send a `TreeAttentionMask` to the tree function.

    False for `eager` (and None): such a target needs `TreeAttentionMask.to_additive_mask` instead.
    """
    if attn_implementation is None or attn_implementation == "eager":
        return False
    if attn_implementation.startswith("paged|") and attn_implementation != "paged|eager":
        attn_implementation = attn_implementation.removeprefix("paged|")  # as `AttentionInterface.get_interface`
    if attn_implementation not in ALL_ATTENTION_FUNCTIONS:
        return False
    return _is_dispatcher(ALL_ATTENTION_FUNCTIONS[attn_implementation])


__all__ = [
    "TREE_MASK_KWARG",
    "install_tree_attention",
    "routes_tree_attention",
    "tree_attention_forward",
    "uninstall_tree_attention",
]
