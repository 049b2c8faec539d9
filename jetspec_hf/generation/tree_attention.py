"""Tree attention for the verify forward: prefix and tree attended separately, merged by log-sum-exp.

During a verify the target attends with N tree-node queries to a KV cache holding P committed positions followed
by the N node rows. Every node sees the whole prefix and exactly its own ancestors (itself included). Instead of
materialising an `(N, P + N)` mask, `tree_attention_forward` splits the keys at P:

* prefix part: the N queries against rows `[0, P)` with no mask (or only a per-row key mask for cache holes),
  which a fused kernel can run: `flash_attn_func` on CUDA, the CPU flash kernel on CPU, both returning the LSE;
* tree part: the N queries against rows `[P, P + N)` with the `N × N` ancestor mask, tiny, in plain torch;

and merges the two softmaxes exactly: with per-query log-sum-exps `a` (prefix) and `b` (tree),
`out = σ(a − b) · prefix_out + (1 − σ(a − b)) · tree_out`.

Routing needs no change to any model: `Qwen3Model.forward` passes a dict `{"full_attention": X}` unchanged to
every layer's attention function, and `install_tree_attention` wraps each registered attention backend so that a
`TreeAttentionMask` goes to `tree_attention_forward` and everything else reaches the original backend untouched.
`eager` is not a registered backend (it is each model's own default) and is not routed; see `routes_tree_attention`.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

try:  # The CUDA prefix kernel; optional (the `flash` extra), never importable on the CPU build.
    from flash_attn import flash_attn_func as _flash_attn_func
except Exception:  # ImportError, or a broken build raising anything at import time.
    _flash_attn_func = None

# The CPU flash kernel returns (output, logsumexp); it is a private aten op, so look it up defensively.
_cpu_flash_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)

# flash-attn 2 kernels take half precision and head dims up to 256 only.
_FLASH_ATTN_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_ATTN_MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class TreeAttentionMask:
    """What a verify forward needs to know about visibility, passed as `attention_mask={"full_attention": mask}`.

    Attributes:
        prefix_length: P, the committed positions in the cache before the N tree rows.
        tree_mask: visibility among the N nodes, `(N, N)` shared by the batch or `(B, 1, N, N)`: either bool
            (True = visible, i.e. the ancestor matrix) or additive float (0 visible / large negative hidden).
            Entry `[n, m]` says whether node n sees node m.
        prefix_key_mask: optional bool `(B, P)`, True = visible, for batches where some cached prefix rows are
            holes (padding). None means every prefix row is visible to every node.
    """

    prefix_length: int
    tree_mask: torch.Tensor
    prefix_key_mask: torch.Tensor | None = None

    def __post_init__(self):
        # Shape checks only: nothing here reads tensor values, so building the mask never syncs a device.
        if self.prefix_length < 0:
            raise ValueError(f"prefix_length must be >= 0, got {self.prefix_length}")
        if self.tree_mask.dim() not in (2, 4) or self.tree_mask.shape[-1] != self.tree_mask.shape[-2]:
            raise ValueError(f"tree_mask must be (N, N) or (B, 1, N, N), got {tuple(self.tree_mask.shape)}")
        if self.tree_mask.dim() == 4 and self.tree_mask.shape[1] != 1:
            raise ValueError(f"tree_mask must be (B, 1, N, N), got {tuple(self.tree_mask.shape)}")
        if self.prefix_key_mask is not None:
            if self.prefix_key_mask.dtype != torch.bool or self.prefix_key_mask.dim() != 2:
                raise ValueError("prefix_key_mask must be a bool (B, P) tensor")
            if self.prefix_key_mask.shape[1] != self.prefix_length:
                raise ValueError(
                    f"prefix_key_mask covers {self.prefix_key_mask.shape[1]} rows, "
                    f"prefix_length is {self.prefix_length}"
                )

    @classmethod
    def from_ancestors(
        cls,
        ancestors: np.ndarray | torch.Tensor,
        prefix_length: int,
        device: torch.device | str,
        prefix_key_mask: torch.Tensor | None = None,
    ) -> "TreeAttentionMask":
        """Build from a host-side bool ancestor matrix `(N, N)` or `(B, 1, N, N)`, with one transfer to `device`."""
        if isinstance(ancestors, np.ndarray):
            ancestors = torch.from_numpy(np.ascontiguousarray(ancestors, dtype=np.bool_))
        return cls(prefix_length, ancestors.to(device, non_blocking=True), prefix_key_mask)

    @property
    def num_nodes(self) -> int:
        """N, the tree nodes (= query length of the verify forward)."""
        return self.tree_mask.shape[-1]

    def to_additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The equivalent materialised additive mask `(B or 1, 1, N, P + N)` (0 / dtype min), as sdpa/eager take it.

        For targets whose attention is not routed (eager), and as the reference the tests compare against.
        """
        device = self.tree_mask.device
        hidden = torch.finfo(dtype).min
        tree_visible = self.tree_mask if self.tree_mask.dtype == torch.bool else self.tree_mask == 0
        tree_visible = tree_visible.reshape(-1, 1, self.num_nodes, self.num_nodes)
        batch = max(tree_visible.shape[0], 1 if self.prefix_key_mask is None else self.prefix_key_mask.shape[0])
        mask = torch.zeros(batch, 1, self.num_nodes, self.prefix_length + self.num_nodes, dtype=dtype, device=device)
        mask[..., self.prefix_length :].masked_fill_(~tree_visible, hidden)
        if self.prefix_key_mask is not None:
            prefix_hidden = ~self.prefix_key_mask.to(device)[:, None, None, :]
            mask[..., : self.prefix_length].masked_fill_(prefix_hidden, hidden)
        return mask


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
        A query that sees no key at all (possible only with hand-made masks) gets a zero output.
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

    tree_out, tree_lse = _tree_part(
        grouped_query, key[:, :, prefix_length : prefix_length + num_nodes],
        value[:, :, prefix_length : prefix_length + num_nodes], mask.tree_mask, group, scale,
    )
    if prefix_length == 0:
        output = tree_out
    else:
        prefix_out, prefix_lse = _prefix_part(
            grouped_query, key[:, :, :prefix_length], value[:, :, :prefix_length], mask.prefix_key_mask, scale
        )
        output = _merge(prefix_out, prefix_lse, tree_out, tree_lse)

    # (B, Hkv, g*N, D) -> (B, Hq, N, D) -> (B, N, Hq, D), the layout every attention function returns.
    output = output.to(query.dtype).reshape(batch, query_heads, num_nodes, head_dim).transpose(1, 2).contiguous()
    return output, None


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
    if window is not None and mask.prefix_length + num_nodes > window:
        raise NotImplementedError("tree attention ignores sliding windows, and this one does not cover every key")


def _tree_part(
    grouped_query: torch.Tensor,
    tree_key: torch.Tensor,
    tree_value: torch.Tensor,
    tree_mask: torch.Tensor,
    group: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked attention of the node queries to the node rows, in fp32.

    Returns the output `(B, Hkv, g*N, D)` and the LSE `(B, Hkv, g*N)`.

    N is small (a few hundred at most), so plain matmuls; fp32 keeps the LSE exact for the merge.
    """
    batch, kv_heads, grouped_length, head_dim = grouped_query.shape
    num_nodes = grouped_length // group
    query = grouped_query.float().view(batch, kv_heads, group, num_nodes, head_dim)
    scores = torch.matmul(query, tree_key.float().unsqueeze(2).transpose(-1, -2)) * scale  # (B, Hkv, g, N, N)
    # (N, N) broadcasts as is; (B, 1, N, N) needs a group axis to line up with (B, Hkv, g, N, N).
    visibility = tree_mask if tree_mask.dim() == 2 else tree_mask.unsqueeze(2)
    if visibility.dtype == torch.bool:
        scores = scores.masked_fill(~visibility, float("-inf"))
    else:
        scores = scores + visibility.float()
    lse = torch.logsumexp(scores, dim=-1)
    # A row with no visible node has LSE -inf; subtracting 0 instead keeps its weights exp(-inf) = 0, not NaN.
    probabilities = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse).unsqueeze(-1))
    output = torch.matmul(probabilities, tree_value.float().unsqueeze(2))
    return output.view(batch, kv_heads, grouped_length, head_dim), lse.view(batch, kv_heads, grouped_length)


def _prefix_part(
    grouped_query: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    prefix_key_mask: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked (or key-masked) attention of the node queries to the P prefix rows.

    Returns the output `(B, Hkv, g*N, D)` and its fp32 natural-log LSE `(B, Hkv, g*N)`, with LSE = -inf and
    output 0 for a batch row whose prefix is entirely hidden by `prefix_key_mask`.
    """
    on_cuda_with_flash = (
        _flash_attn_func is not None
        and grouped_query.is_cuda
        and prefix_key_mask is None  # flash_attn_func takes no mask; holes go the plain way
        and grouped_query.dtype in _FLASH_ATTN_DTYPES
        and grouped_query.shape[-1] <= _FLASH_ATTN_MAX_HEAD_DIM
    )
    if on_cuda_with_flash:
        return _prefix_part_flash_attn(grouped_query, prefix_key, prefix_value, scale)
    if grouped_query.device.type == "cpu" and _cpu_flash_attention is not None:
        output, lse = _prefix_part_cpu_flash(grouped_query, prefix_key, prefix_value, prefix_key_mask, scale)
    else:
        output, lse = _prefix_part_matmul(grouped_query, prefix_key, prefix_value, prefix_key_mask, scale)
    if prefix_key_mask is not None:
        # Kernels disagree on a row with no visible key (the CPU kernel says LSE 0); make it "nothing here".
        row_sees_prefix = prefix_key_mask.any(dim=-1)[:, None, None]  # (B, 1, 1)
        lse = torch.where(row_sees_prefix, lse, float("-inf"))
        output = torch.where(row_sees_prefix.unsqueeze(-1), output, 0.0)
    return output, lse


def _prefix_part_cpu_flash(grouped_query, prefix_key, prefix_value, prefix_key_mask, scale):
    """CPU flash kernel: returns `(output (B, H, L, D), lse (B, H, L))`, LSE in natural log, fp32 for fp32 input."""
    key_bias = None
    if prefix_key_mask is not None:
        # (B, 1, 1, P) broadcasts over heads and the folded queries, since holes do not depend on the query.
        key_bias = torch.zeros(prefix_key_mask.shape, dtype=grouped_query.dtype, device=grouped_query.device)
        key_bias = key_bias.masked_fill_(~prefix_key_mask, float("-inf"))[:, None, None, :]
    output, lse = _cpu_flash_attention(
        grouped_query, prefix_key, prefix_value, 0.0, False, attn_mask=key_bias, scale=scale
    )
    return output, lse.float()


def _prefix_part_flash_attn(grouped_query, prefix_key, prefix_value, scale):
    """flash-attn 2 on CUDA (NOT exercised by the CPU test suite).

    `flash_attn_func` takes `(B, L, H, D)` with native GQA; `return_attn_probs=True` with dropout 0 adds the
    softmax LSE `(B, H, L)` (fp32, natural log) at no cost. We call it with the kv heads as the query heads
    (queries already folded), i.e. plain MHA over `(B, g*N, Hkv, D)`.
    """
    result = _flash_attn_func(
        grouped_query.transpose(1, 2),
        prefix_key.transpose(1, 2),
        prefix_value.transpose(1, 2),
        dropout_p=0.0,
        softmax_scale=scale,
        causal=False,
        return_attn_probs=True,
    )
    output, lse = result[0], result[1]
    return output.transpose(1, 2), lse.float()


def _prefix_part_matmul(grouped_query, prefix_key, prefix_value, prefix_key_mask, scale):
    """Plain torch fallback (any device): fp32 scores `(B, Hkv, g*N, P)`, then the same output/LSE pair."""
    scores = torch.matmul(grouped_query.float(), prefix_key.float().transpose(-1, -2)) * scale
    if prefix_key_mask is not None:
        scores = scores.masked_fill(~prefix_key_mask[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probabilities = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse).unsqueeze(-1))
    return torch.matmul(probabilities, prefix_value.float()), lse


def _merge(prefix_out, prefix_lse, tree_out, tree_lse) -> torch.Tensor:
    """Exact softmax over the union of both key sets, from the two partial softmaxes and their LSEs (fp32).

    The prefix share of the total mass is exp(a) / (exp(a) + exp(b)) = σ(a − b). σ(±inf) is exact when only one
    side sees anything; both sides -inf give NaN, which becomes a zero output (both partial outputs are zero).
    """
    prefix_share = torch.sigmoid(prefix_lse - tree_lse).nan_to_num_(0.0).unsqueeze(-1)
    tree_out = tree_out.float()
    return tree_out + prefix_share * (prefix_out.float() - tree_out)


# ----------------------------------------------------------------------------------------------------- routing

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
        if isinstance(attention_mask, TreeAttentionMask):
            if args:  # Backends disagree on the order of (dropout, scaling); callers pass them by keyword.
                raise TypeError("pass dropout/scaling by keyword when the mask is a TreeAttentionMask")
            return tree_attention_forward(module, query, key, value, attention_mask, **kwargs)
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
    "TreeAttentionMask",
    "install_tree_attention",
    "routes_tree_attention",
    "tree_attention_forward",
    "uninstall_tree_attention",
]
