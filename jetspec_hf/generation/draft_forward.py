"""The draft head's forward for decoding: the same computation as `JetSpecDraftModel.forward`, in fewer operations.

On a CPU, and for small heads on a GPU, a head forward costs its number of operations rather than its
arithmetic: the model's forward launches ~220 small operations per round. This one computes the same values with
about half as many, and reads no per-round mask or rotary table it could build once:

- the projected context is the same input to every layer, so the context rows' keys and values of ALL layers come
  from one matrix product (their weights stacked once per head);
- the block's queries, keys and values come from one product per layer (q/k/v weights stacked), and so do the
  MLP's gate and up projections;
- RMS norms are `torch.nn.functional.rms_norm`, attention is one `scaled_dot_product_attention` call that reads
  grouped keys without repeating them;
- keys and values live in preallocated buffers that grow by doubling: a round writes its rows in place instead of
  concatenating the whole cache, and the block's rows are simply not kept;
- rotary tables and the block mask are built for a range of positions once and sliced each round.

The model's own forward stays the reference (training, the stock DFlash path); `tests/generation/test_draft_forward.py`
holds this one to it.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from transformers.models.qwen3.modeling_qwen3 import rotate_half

from ..modeling_jetspec import JetSpecDraftModel, windowed_attention_mask
from .cache import compaction_order


def _grown(capacity: int, needed: int) -> int:
    while capacity < needed:
        capacity *= 2
    return capacity


class _StackedWeights:
    """The head's weights stacked for the lean forward; rebuilt when any parameter changes in place."""

    def __init__(self, head: JetSpecDraftModel):
        self.versions = [parameter._version for parameter in head.parameters()]
        layers = head.layers
        attention = layers[0].self_attn
        self.num_heads = head.config.num_attention_heads
        self.num_kv_heads = head.config.num_key_value_heads
        self.head_dim = attention.head_dim
        self.scaling = attention.scaling
        self.eps = head.config.rms_norm_eps
        self.fc = head.fc.weight
        self.hidden_norm = head.hidden_norm.weight
        self.norm = head.norm.weight
        # Context rows: keys and values of every layer from one product, (L * 2 * kv * d, H).
        self.context_kv = torch.cat(
            [torch.cat([layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]) for layer in layers]
        )
        self.block_qkv = [
            torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight])
            for layer in layers
        ]
        self.gate_up = [torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]) for layer in layers]
        self.layers = [
            dict(
                input_norm=layer.input_layernorm.weight,
                post_norm=layer.post_attention_layernorm.weight,
                q_norm=layer.self_attn.q_norm.weight,
                k_norm=layer.self_attn.k_norm.weight,
                o_proj=layer.self_attn.o_proj.weight,
                down=layer.mlp.down_proj.weight,
                act=layer.mlp.act_fn,
            )
            for layer in layers
        ]
        biased = [name for name, _ in head.named_parameters() if name.endswith(".bias")]
        if biased:
            raise ValueError(f"The lean draft forward assumes bias-free projections; this head has {biased[:3]}.")

    def stale(self, head: JetSpecDraftModel) -> bool:
        return [parameter._version for parameter in head.parameters()] != self.versions


# Stacked weights per head, so that every generate call with the same head reuses them (dropped with the head).
_STACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stacked_weights(head: JetSpecDraftModel) -> _StackedWeights:
    stacked = _STACKED.get(head)
    if stacked is None or stacked.stale(head):
        stacked = _STACKED[head] = _StackedWeights(head)
    return stacked


class HeadKVCache:
    """Keys and values of a batch's context rows, per layer, in buffers that grow by doubling.

    Columns are shared by the batch's rows. A row that got fewer new context rows than another in the same call
    leaves holes (masked columns); `compact` squeezes them out when they pile up. Positions are each row's own, so
    holes never shift a row's rotary positions.

    Attributes:
        length: columns in use.
        valid: `(B, capacity)` bool, which columns hold a row's context; `None` while none has a hole.
        next_positions: each row's position of its next context row (its committed context length).
    """

    def __init__(self, batch_size: int, num_layers: int, num_kv_heads: int, head_dim: int, dtype, device,
                 capacity: int = 256):
        shape = (batch_size, num_kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0
        self.valid: torch.Tensor | None = None
        self.next_positions = [0] * batch_size

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def reserve(self, needed: int) -> None:
        """Make room for `needed` columns, keeping the ones held."""
        if needed <= self.capacity:
            return
        capacity = _grown(self.capacity, needed)
        for buffers in (self.keys, self.values):
            for index, old in enumerate(buffers):
                new = old.new_empty(old.shape[0], old.shape[1], capacity, old.shape[3])
                new[:, :, : self.length] = old[:, :, : self.length]
                buffers[index] = new
        if self.valid is not None:
            valid = self.valid.new_zeros(self.batch_size, capacity)
            valid[:, : self.length] = self.valid[:, : self.length]
            self.valid = valid

    def mark(self, start: int, valid: torch.Tensor | None) -> None:
        """Columns `[start, start + n)` were just written; `valid` `(B, n)` says which hold context (None: all)."""
        if valid is None:
            if self.valid is not None:
                self.valid[:, start : self.length] = True
            return
        if self.valid is None:
            self.valid = torch.ones(self.batch_size, self.capacity, dtype=torch.bool, device=valid.device)
        self.valid[:, start : start + valid.shape[1]] = valid

    def key_mask(self, end: int) -> torch.Tensor | None:
        """`(B, end)` bool over the first `end` columns (context then block), or `None` when nothing is masked."""
        if self.valid is None:
            return None
        mask = self.valid[:, :end].clone()
        mask[:, self.length :] = True
        return mask

    def select_rows(self, rows: list[int]) -> None:
        """Keep only these rows of the batch (finished sequences leave)."""
        index = torch.tensor(rows, device=self.keys[0].device)
        self.keys = [keys.index_select(0, index) for keys in self.keys]
        self.values = [values.index_select(0, index) for values in self.values]
        if self.valid is not None:
            self.valid = self.valid.index_select(0, index.to(self.valid.device))
        self.next_positions = [self.next_positions[row] for row in rows]

    def compact(self) -> None:
        """Move every row's context columns to the front, in order, and drop the holes."""
        if self.valid is None:
            return
        order, new_valid = compaction_order(self.valid[:, : self.length])
        length = new_valid.shape[1]
        for buffers in (self.keys, self.values):
            for index, old in enumerate(buffers):
                gather = order.to(old.device)[:, None, :, None].expand(-1, old.shape[1], -1, old.shape[3])
                buffers[index][:, :, :length] = old[:, :, : self.length].gather(2, gather)
        self.valid[:, :length] = new_valid
        self.length = length
        if bool(self.valid[:, :length].all()):
            self.valid = None

    def hole_fraction(self) -> float:
        """The share of held columns that are holes, from the host's counts (each row holds `next_positions`
        context columns), so that asking costs no device read."""
        if self.valid is None or self.length == 0:
            return 0.0
        return 1.0 - sum(self.next_positions) / (self.batch_size * self.length)


class DraftForward:
    """Runs one head's drafting forward over its own context state, for a batch of sequences.

    Args:
        head: the JetSpec / DFlash head (its parameters are read, never changed).
        draft_window: when set, every layer attends at most this many positions back (a layer whose config
            declares a smaller sliding window keeps its own); `None` keeps the head's declared windows alone.
    """

    def __init__(self, head: JetSpecDraftModel, draft_window: int | None = None):
        self.head = head
        # Per layer, the window its block rows attend within (None: the whole context).
        self.windows = [
            window if draft_window is None else min(window or draft_window, draft_window)
            for window in head.config.layer_windows
        ]
        self.weights = _stacked_weights(head)
        self.causal = head.config.causal_head
        self.block_size = head.config.block_size
        parameter = head.fc.weight
        self.dtype, self.device = parameter.dtype, parameter.device
        self._cos = self._sin = None  # rotary tables for positions [0, len)
        self._mask = None  # (block_size, capacity + block_size) additive block mask, context columns first

    def new_state(self, batch_size: int = 1) -> HeadKVCache:
        weights = self.weights
        return HeadKVCache(
            batch_size, len(weights.layers), weights.num_kv_heads, weights.head_dim, self.dtype, self.device
        )

    def _rotary(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < end:
            length = _grown(512 if self._cos is None else self._cos.shape[0], end)
            positions = torch.arange(length, device=self.device)[None]
            probe = torch.empty(0, dtype=self.dtype, device=self.device)
            cos, sin = self.head.rotary_emb(probe, positions)
            self._cos, self._sin = cos[0], sin[0]
        return self._cos, self._sin

    def _rotary_for(self, starts: list[int], count: int, valid: torch.Tensor | None):
        """cos/sin `(B or 1, 1, count, d)` for each row's next `count` positions from `starts` (holes skipped)."""
        cos, sin = self._rotary(max(starts) + count)
        if len(starts) == 1 and valid is None:
            start = starts[0]
            return cos[None, None, start : start + count], sin[None, None, start : start + count]
        offsets = torch.arange(count, device=self.device)[None, :].expand(len(starts), -1)
        if valid is not None:
            # A row's positions advance only on its valid columns; holes reuse a neighbour's (never attended).
            offsets = (valid.to(self.device).cumsum(dim=1) - 1).clamp(min=0)
        positions = torch.tensor(starts, device=self.device)[:, None] + offsets
        return cos[positions][:, None], sin[positions][:, None]

    def _block_mask(self, context_length: int, block_length: int) -> torch.Tensor | None:
        """Additive `(block_length, context_length + block_length)`: the context is visible, the block causal."""
        if not self.causal or block_length == 1:
            return None
        if self._mask is None or self._mask.shape[1] - self.block_size < context_length:
            capacity = _grown(512 if self._mask is None else self._mask.shape[1] - self.block_size, context_length)
            mask = torch.zeros(self.block_size, capacity + self.block_size, dtype=self.dtype, device=self.device)
            causal = torch.ones(self.block_size, self.block_size, dtype=torch.bool, device=self.device).tril()
            mask[:, capacity:].masked_fill_(~causal, torch.finfo(self.dtype).min)
            self._mask = mask
        capacity = self._mask.shape[1] - self.block_size
        # Context columns end where the block's begin: slice so that exactly `context_length` precede it.
        return self._mask[:block_length, capacity - context_length : capacity + block_length]

    def _attention_mask(self, state: HeadKVCache, block_length: int) -> torch.Tensor | None:
        """The block mask, with each row's context holes hidden when there are any."""
        block_mask = self._block_mask(state.length, block_length)
        key_mask = state.key_mask(state.length + block_length)
        if key_mask is None:
            return block_mask
        hidden = torch.zeros(key_mask.shape, dtype=self.dtype, device=self.device)
        hidden.masked_fill_(~key_mask.to(self.device), torch.finfo(self.dtype).min)
        mask = hidden[:, None, None, :]
        return mask if block_mask is None else mask + block_mask

    def _windowed_masks(self, state: HeadKVCache, mask: torch.Tensor | None, query_length: int) -> dict:
        """Per distinct window: `(first column, mask over columns [first, end))`. Without holes every row's
        columns sit at the same offsets from its next position, so columns no query can see are cut off (that
        is what makes a windowed head's cost stop growing with the context); with holes all columns are kept
        and masked."""
        end = state.length + query_length
        starts = torch.tensor(state.next_positions, device=self.device)[:, None]
        block = starts + torch.arange(query_length, device=self.device)[None]
        if state.valid is None:
            context = starts - state.length + torch.arange(state.length, device=self.device)[None]
        else:
            valid = state.valid[:, : state.length].to(self.device)
            context = starts - valid.sum(dim=1, keepdim=True) + valid.cumsum(dim=1) - 1
        key_positions = torch.cat([context, block], dim=1)
        masks = {}
        for window in set(self.windows) - {None}:
            first = max(0, state.length - window + 1) if state.valid is None else 0
            kept = None if mask is None else mask[..., first:end]
            masks[window] = (first, windowed_attention_mask(kept, block, key_positions[:, first:], window, self.dtype))
        return masks

    @staticmethod
    def _rotate(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # states (B, heads, T, d); cos/sin broadcastable to it
        return states * cos + rotate_half(states) * sin

    def add_context(
        self, state: HeadKVCache, features: torch.Tensor, valid: torch.Tensor | None = None,
        counts: list[int] | None = None,
    ) -> None:
        """Project new context rows `(B, n, k*H)` and append their keys/values to every layer's buffers.

        `valid` `(B, n)` marks which of the n rows a batch row really has (the rest are holes), and `counts` gives
        their number per row (both `None`: all n).
        """
        weights = self.weights
        batch, count = features.shape[0], features.shape[1]
        start = state.length
        state.reserve(start + count)
        context = F.rms_norm(
            F.linear(features.to(self.device, self.dtype), weights.fc), (weights.fc.shape[0],), weights.hidden_norm,
            weights.eps,
        )
        stacked = F.linear(context, weights.context_kv).view(
            batch, count, len(weights.layers), 2, weights.num_kv_heads, weights.head_dim
        )
        cos, sin = self._rotary_for(state.next_positions, count, valid)
        for index, layer in enumerate(weights.layers):
            keys = F.rms_norm(stacked[:, :, index, 0], (weights.head_dim,), layer["k_norm"], weights.eps)
            state.keys[index][:, :, start : start + count] = self._rotate(keys.transpose(1, 2), cos, sin)
            state.values[index][:, :, start : start + count] = stacked[:, :, index, 1].transpose(1, 2)
        state.length = start + count
        state.mark(start, valid)
        counts = counts if counts is not None else [count] * batch
        state.next_positions = [position + added for position, added in zip(state.next_positions, counts)]

    def draft(self, state: HeadKVCache, block_embeds: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states `(B, Q, H)` of the blocks `(B, Q, H)` (anchor first) after each row's context.

        The block's keys and values are written after the context columns but not kept: `state.length` is unchanged.
        """
        weights = self.weights
        heads, kv_heads, head_dim = weights.num_heads, weights.num_kv_heads, weights.head_dim
        batch, query_length = block_embeds.shape[0], block_embeds.shape[1]
        start = state.length
        state.reserve(start + query_length)
        end = start + query_length
        cos, sin = self._rotary_for(state.next_positions, query_length, None)
        mask = self._attention_mask(state, query_length)
        windowed = self._windowed_masks(state, mask, query_length) if any(self.windows) else {}
        hidden = block_embeds.to(self.dtype)
        hidden_size = hidden.shape[-1]
        for index, layer in enumerate(weights.layers):
            normed = F.rms_norm(hidden, (hidden_size,), layer["input_norm"], weights.eps)
            qkv = F.linear(normed, weights.block_qkv[index]).view(batch, query_length, heads + 2 * kv_heads, head_dim)
            query = F.rms_norm(qkv[:, :, :heads], (head_dim,), layer["q_norm"], weights.eps)
            keys = F.rms_norm(qkv[:, :, heads : heads + kv_heads], (head_dim,), layer["k_norm"], weights.eps)
            query = self._rotate(query.transpose(1, 2), cos, sin)
            state.keys[index][:, :, start:end] = self._rotate(keys.transpose(1, 2), cos, sin)
            state.values[index][:, :, start:end] = qkv[:, :, heads + kv_heads :].transpose(1, 2)
            first, layer_mask = windowed.get(self.windows[index], (0, mask))
            attended = F.scaled_dot_product_attention(
                query,
                state.keys[index][:, :, first:end],
                state.values[index][:, :, first:end],
                attn_mask=layer_mask,
                scale=weights.scaling,
                enable_gqa=heads != kv_heads,
            )
            hidden = hidden + F.linear(attended.transpose(1, 2).reshape(batch, query_length, -1), layer["o_proj"])
            normed = F.rms_norm(hidden, (hidden_size,), layer["post_norm"], weights.eps)
            gate, up = F.linear(normed, weights.gate_up[index]).chunk(2, dim=-1)
            hidden = hidden + F.linear(layer["act"](gate) * up, layer["down"])
        return F.rms_norm(hidden, (hidden_size,), weights.norm, weights.eps)


__all__ = ["DraftForward", "HeadKVCache"]
