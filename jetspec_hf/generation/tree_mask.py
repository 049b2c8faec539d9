"""The verify forward's visibility: which cached prefix rows and which tree nodes each node's query sees.

A `TreeAttentionMask` travels to every layer of one verify forward (`tree_attention.py` routes it to the tree
attention); the additive biases that the attention routes need are derived from it once per forward and shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class TreeAttentionMask:
    """What a verify forward needs to know about visibility, passed as `attention_mask={"full_attention": mask}`.

    Attributes:
        prefix_length: P, the committed positions in the cache before the N tree rows.
        tree_mask: visibility among the N nodes, `(N, N)` shared by the batch or `(B, 1, N, N)`: either bool
            (True = visible, i.e. the ancestor matrix) or additive float (0 = visible, anything else = hidden).
            Entry `[n, m]` says whether node n sees node m.
        prefix_key_mask: optional bool `(B, P)`, True = visible, for batches where some cached prefix rows are
            holes (padding). None means every prefix row is visible to every node.
        max_depth: the deepest node's depth (root 0), when known: a node at depth d attends P + d positions back,
            which is what a sliding window must cover.

    Build one per verify; every layer of that forward shares it, and the additive biases derived from it are
    built by the first layer and reused by the others. They are built on the device of the layer's query, so a
    model split over devices (whose hooks move tensors, not this object) works too.
    """

    prefix_length: int
    tree_mask: torch.Tensor
    prefix_key_mask: torch.Tensor | None = None
    max_depth: int | None = None
    # Per-(kind, group, device) biases derived on first use. Two threads racing on a key build the same value.
    _derived: dict = field(default_factory=dict, init=False, repr=False)

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
        max_depth = None
        if isinstance(ancestors, np.ndarray):
            # Each node's row holds itself and its ancestors: depth + 1 entries (padding nodes see only themselves).
            # Counted on the host array, before the transfer, so that it costs no device read.
            max_depth = int(ancestors.sum(-1).max()) - 1 if ancestors.size else 0
            ancestors = torch.from_numpy(np.ascontiguousarray(ancestors, dtype=np.bool_))
        return cls(prefix_length, ancestors.to(device, non_blocking=True), prefix_key_mask, max_depth)

    @property
    def num_nodes(self) -> int:
        """N, the tree nodes (= query length of the verify forward)."""
        return self.tree_mask.shape[-1]

    def tree_visibility(self) -> torch.Tensor:
        """The tree part as bool, True = visible, in the shape it was given."""
        return self.tree_mask if self.tree_mask.dtype == torch.bool else self.tree_mask == 0

    def to_additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The equivalent materialised additive mask `(B or 1, 1, N, P + N)` (0 / dtype min), as sdpa/eager take it.

        For targets whose attention is not routed (eager), and as the reference the tests compare against.
        """
        device = self.tree_mask.device
        hidden = torch.finfo(dtype).min
        tree_visible = self.tree_visibility().reshape(-1, 1, self.num_nodes, self.num_nodes)
        batch = max(tree_visible.shape[0], 1 if self.prefix_key_mask is None else self.prefix_key_mask.shape[0])
        mask = torch.zeros(batch, 1, self.num_nodes, self.prefix_length + self.num_nodes, dtype=dtype, device=device)
        mask[..., self.prefix_length :].masked_fill_(~tree_visible, hidden)
        if self.prefix_key_mask is not None:
            prefix_hidden = ~self.prefix_key_mask.to(device)[:, None, None, :]
            mask[..., : self.prefix_length].masked_fill_(prefix_hidden, hidden)
        return mask

    def _folded_tree_bias(self, group: int, device: torch.device) -> torch.Tensor:
        """fp32 additive tree bias for queries folded as `(g*N)`: `(g*N, N)` or `(B, 1, g*N, N)`.

        Row `j*N + n` is node n's row for the j-th query head of a kv group, so the mask is tiled g times.
        Hidden entries get the fp32 minimum rather than -inf: a row that sees nothing then keeps a finite LSE
        (kernels return LSE 0 for an all -inf row), and its share in the merge is exactly 0.
        """
        key = ("tree", group, device)
        if key not in self._derived:
            bias = torch.zeros(self.tree_mask.shape, dtype=torch.float32, device=device)
            bias.masked_fill_(~self.tree_visibility().to(device), torch.finfo(torch.float32).min)
            self._derived[key] = bias.repeat(group, 1) if bias.dim() == 2 else bias.repeat(1, 1, group, 1)
        return self._derived[key]

    def _folded_full_bias(self, group: int, device: torch.device) -> torch.Tensor:
        """fp32 bias `(B or 1, 1, g*N, P + N)` over all keys for folded queries: the one-call CPU route's mask.

        Built by the first layer of a verify and reused by the others; every verify builds its own.
        """
        key = ("full", group, device)
        if key not in self._derived:
            tree_bias = self._folded_tree_bias(group, device)
            tree_bias = tree_bias.reshape(-1, 1, *tree_bias.shape[-2:])  # (B or 1, 1, g*N, N)
            prefix_bias = self._prefix_key_bias(device)  # (B, 1, 1, P) or None
            batch = max(tree_bias.shape[0], 1 if prefix_bias is None else prefix_bias.shape[0])
            shape = (batch, 1, tree_bias.shape[2], self.prefix_length + self.num_nodes)
            bias = torch.zeros(shape, dtype=torch.float32, device=device)
            bias[..., self.prefix_length :] = tree_bias
            if prefix_bias is not None:
                bias[..., : self.prefix_length] = prefix_bias
            self._derived[key] = bias
        return self._derived[key]

    def _prefix_key_bias(self, device: torch.device) -> torch.Tensor | None:
        """fp32 additive `(B, 1, 1, P)` from `prefix_key_mask` (fp32 minimum where hidden), or None."""
        if self.prefix_key_mask is None:
            return None
        key = ("prefix", device)
        if key not in self._derived:
            bias = torch.zeros(self.prefix_key_mask.shape, dtype=torch.float32, device=device)
            bias.masked_fill_(~self.prefix_key_mask.to(device), torch.finfo(torch.float32).min)
            self._derived[key] = bias[:, None, None, :]
        return self._derived[key]


__all__ = ["TreeAttentionMask"]
