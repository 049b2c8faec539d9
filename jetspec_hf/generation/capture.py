"""Capturing the raw outputs of the target's tapped decoder layers during the loop's own forwards.

`output_hidden_states=True` would keep every layer (and its last entry is post-norm); hooks on the decoder layers
keep exactly the tensors the head reads. One hook per decoder layer is installed once, by `enable(target)`, and
records only into the capture that is active in the CURRENT context (a `contextvars.ContextVar`): a tree-decoding
call in one thread never sees the forwards of a plain `generate` or of another tree-decoding call running in another
thread on the same target. The hook is a module-level function, so the target still deep-copies and pickles.
"""

from __future__ import annotations

import contextvars

import torch
from torch import nn

_ACTIVE_CAPTURE: contextvars.ContextVar[TappedLayerCapture | None] = contextvars.ContextVar(
    "jetspec_active_capture", default=None
)


def record_tapped_output(module: nn.Module, args, output) -> None:
    """Forward hook of every decoder layer of an enabled target; a no-op unless this context captures."""
    capture = _ACTIVE_CAPTURE.get()
    if capture is not None:
        capture.record(module, output)


def install_capture_hooks(decoder_layers: nn.ModuleList) -> None:
    """Install `record_tapped_output` on every decoder layer, once."""
    for layer in decoder_layers:
        if record_tapped_output not in layer._forward_hooks.values():
            layer.register_forward_hook(record_tapped_output)


def has_capture_hooks(decoder_layers: nn.ModuleList) -> bool:
    return all(record_tapped_output in layer._forward_hooks.values() for layer in decoder_layers)


class TappedLayerCapture:
    """Context manager that records the outputs of `decoder_layers[i]` for each tapped `i` in this context.

    After a forward, `features()` returns the tapped outputs concatenated on the hidden dimension:
    `(batch, seq, k * hidden_size)`, in the order of `layer_ids`. The layers get the hooks of
    `install_capture_hooks` if they lack them (`enable(target)` installs them up front, before any thread runs).
    """

    def __init__(self, decoder_layers: nn.ModuleList, layer_ids: list[int]):
        install_capture_hooks(decoder_layers)
        self.layer_ids = list(layer_ids)
        # A layer may be tapped more than once (released configs can list a layer twice).
        self._slots_of: dict[int, list[int]] = {}
        for slot, layer_id in enumerate(self.layer_ids):
            self._slots_of.setdefault(id(decoder_layers[layer_id]), []).append(slot)
        self._outputs: list[torch.Tensor | None] = [None] * len(self.layer_ids)
        self._token = None

    def record(self, module: nn.Module, output) -> None:
        for slot in self._slots_of.get(id(module), ()):
            self._outputs[slot] = output[0] if isinstance(output, tuple) else output

    def __enter__(self) -> TappedLayerCapture:
        self._token = _ACTIVE_CAPTURE.set(self)
        return self

    def __exit__(self, *exc_info) -> None:
        _ACTIVE_CAPTURE.reset(self._token)
        self._outputs = [None] * len(self.layer_ids)

    def features(self) -> torch.Tensor:
        """Concatenated tapped outputs of the most recent forward."""
        missing = [layer_id for layer_id, output in zip(self.layer_ids, self._outputs) if output is None]
        if missing:
            raise RuntimeError(f"No output was captured for tapped target layers {missing}.")
        outputs = self._outputs
        self._outputs = [None] * len(self.layer_ids)
        # With the layers split over devices (device_map), the tapped outputs are gathered on the first one's.
        device = outputs[0].device
        return torch.cat([output.to(device) for output in outputs], dim=-1) if len(outputs) > 1 else outputs[0]


__all__ = ["TappedLayerCapture", "has_capture_hooks", "install_capture_hooks", "record_tapped_output"]
