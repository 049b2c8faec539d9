"""Capturing the raw outputs of the target's tapped decoder layers with forward hooks.

`output_hidden_states=True` would keep every layer (and its last entry is post-norm); hooks on the tapped
layers keep exactly the tensors the head reads, and nothing else.
"""

from __future__ import annotations

import torch
from torch import nn


class TappedLayerCapture:
    """Context manager that records the outputs of `layers[i]` for each tapped `i` during target forwards.

    After a forward, `features()` returns the tapped outputs concatenated on the hidden dimension:
    `(batch, seq, k * hidden_size)`, in the order of `layer_ids`.
    """

    def __init__(self, decoder_layers: nn.ModuleList, layer_ids: list[int]):
        self.decoder_layers = decoder_layers
        self.layer_ids = list(layer_ids)
        self._outputs: dict[int, torch.Tensor] = {}
        self._handles: list = []

    def _hook_for(self, layer_id: int):
        def hook(module, args, output):
            self._outputs[layer_id] = output[0] if isinstance(output, tuple) else output

        return hook

    def __enter__(self) -> "TappedLayerCapture":
        self._handles = [
            self.decoder_layers[layer_id].register_forward_hook(self._hook_for(layer_id)) for layer_id in self.layer_ids
        ]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._outputs = {}

    def features(self) -> torch.Tensor:
        """Concatenated tapped outputs of the most recent forward."""
        missing = [layer_id for layer_id in self.layer_ids if layer_id not in self._outputs]
        if missing:
            raise RuntimeError(f"No output was captured for tapped target layers {missing}.")
        captured = torch.cat([self._outputs[layer_id] for layer_id in self.layer_ids], dim=-1)
        self._outputs = {}
        return captured


__all__ = ["TappedLayerCapture"]
