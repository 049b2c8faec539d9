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

The model's own forward stays the reference (training, the stock DFlash path); `tests/generation/test_lean_head.py`
holds this one to it.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from ..modeling_jetspec import JetSpecDraftModel


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


# Stacked weights per head, so that every generate call with the same head reuses them.
_STACKED: dict[int, tuple] = {}


def _stacked_weights(head: JetSpecDraftModel) -> _StackedWeights:
    entry = _STACKED.get(id(head))
    if entry is None or entry[0]() is not head or entry[1].stale(head):
        stacked = _StackedWeights(head)
        _STACKED[id(head)] = (weakref.ref(head, lambda _, key=id(head): _STACKED.pop(key, None)), stacked)
        return stacked
    return entry[1]


class LeanHeadState:
    """Keys and values of a head's context rows, per layer, in buffers that grow by doubling.

    Attributes:
        length: context rows held (the first `length` slots of each buffer).
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype, device, capacity: int = 256):
        shape = (1, num_kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, needed: int) -> None:
        """Make room for `needed` rows, keeping the ones held."""
        if needed <= self.capacity:
            return
        capacity = _grown(self.capacity, needed)
        for buffers in (self.keys, self.values):
            for index, old in enumerate(buffers):
                new = old.new_empty(old.shape[0], old.shape[1], capacity, old.shape[3])
                new[:, :, : self.length] = old[:, :, : self.length]
                buffers[index] = new


class LeanHead:
    """Runs one head's drafting forward over its own context state.

    Args:
        head: the JetSpec / DFlash head (its parameters are read, never changed).
    """

    def __init__(self, head: JetSpecDraftModel):
        self.head = head
        self.weights = _stacked_weights(head)
        self.causal = head.config.causal_head
        self.block_size = head.config.block_size
        parameter = head.fc.weight
        self.dtype, self.device = parameter.dtype, parameter.device
        self._cos = self._sin = None  # rotary tables for positions [0, len)
        self._mask = None  # (block_size, capacity + block_size) additive block mask, context columns first

    def new_state(self) -> LeanHeadState:
        weights = self.weights
        return LeanHeadState(len(weights.layers), weights.num_kv_heads, weights.head_dim, self.dtype, self.device)

    def _rotary(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < end:
            length = _grown(512 if self._cos is None else self._cos.shape[0], end)
            positions = torch.arange(length, device=self.device)[None]
            probe = torch.empty(0, dtype=self.dtype, device=self.device)
            cos, sin = self.head.rotary_emb(probe, positions)
            self._cos, self._sin = cos[0], sin[0]
        return self._cos, self._sin

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

    @staticmethod
    def _rotate(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # states (1, heads, T, d); cos/sin (T, d)
        half = states.shape[-1] // 2
        rotated = torch.cat((-states[..., half:], states[..., :half]), dim=-1)
        return states * cos + rotated * sin

    def add_context(self, state: LeanHeadState, features: torch.Tensor) -> None:
        """Project new context rows `(1, n, k*H)` and append their keys/values to every layer's buffers."""
        weights = self.weights
        count = features.shape[1]
        start = state.length
        state.reserve(start + count)
        context = F.rms_norm(
            F.linear(features.to(self.device, self.dtype), weights.fc), (weights.fc.shape[0],), weights.hidden_norm,
            weights.eps,
        )
        stacked = F.linear(context[0], weights.context_kv).view(count, len(weights.layers), 2, weights.num_kv_heads,
                                                                 weights.head_dim)
        cos, sin = self._rotary(start + count)
        cos, sin = cos[start : start + count], sin[start : start + count]
        for index, layer in enumerate(weights.layers):
            keys = F.rms_norm(stacked[:, index, 0], (weights.head_dim,), layer["k_norm"], weights.eps)
            keys = self._rotate(keys.transpose(0, 1)[None], cos, sin)
            state.keys[index][:, :, start : start + count] = keys
            state.values[index][:, :, start : start + count] = stacked[:, index, 1].transpose(0, 1)[None]
        state.length = start + count

    def draft(self, state: LeanHeadState, block_embeds: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states `(Q, H)` of the block `(1, Q, H)` (anchor first) after the state's context.

        The block's keys and values are written after the context rows but not kept: `state.length` is unchanged.
        """
        weights = self.weights
        heads, kv_heads, head_dim = weights.num_heads, weights.num_kv_heads, weights.head_dim
        query_length = block_embeds.shape[1]
        start = state.length
        state.reserve(start + query_length)
        end = start + query_length
        cos, sin = self._rotary(end)
        cos, sin = cos[start:end], sin[start:end]
        mask = self._block_mask(start, query_length)
        hidden = block_embeds[0].to(self.dtype)
        hidden_size = hidden.shape[-1]
        for index, layer in enumerate(weights.layers):
            normed = F.rms_norm(hidden, (hidden_size,), layer["input_norm"], weights.eps)
            qkv = F.linear(normed, weights.block_qkv[index]).view(query_length, heads + 2 * kv_heads, head_dim)
            query = F.rms_norm(qkv[:, :heads], (head_dim,), layer["q_norm"], weights.eps)
            keys = F.rms_norm(qkv[:, heads : heads + kv_heads], (head_dim,), layer["k_norm"], weights.eps)
            query = self._rotate(query.transpose(0, 1)[None], cos, sin)
            state.keys[index][:, :, start:end] = self._rotate(keys.transpose(0, 1)[None], cos, sin)
            state.values[index][:, :, start:end] = qkv[:, heads + kv_heads :].transpose(0, 1)[None]
            attended = F.scaled_dot_product_attention(
                query,
                state.keys[index][:, :, :end],
                state.values[index][:, :, :end],
                attn_mask=mask,
                scale=weights.scaling,
                enable_gqa=heads != kv_heads,
            )
            hidden = hidden + F.linear(attended[0].transpose(0, 1).reshape(query_length, -1), layer["o_proj"])
            normed = F.rms_norm(hidden, (hidden_size,), layer["post_norm"], weights.eps)
            gate, up = F.linear(normed, weights.gate_up[index]).chunk(2, dim=-1)
            hidden = hidden + F.linear(layer["act"](gate) * up, layer["down"])
        return F.rms_norm(hidden, (hidden_size,), weights.norm, weights.eps)


__all__ = ["LeanHead", "LeanHeadState"]
