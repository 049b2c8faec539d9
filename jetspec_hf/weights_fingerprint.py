"""A fingerprint of a head's weights: the same for the same tensors, whatever folder or process they come from.

A bench report records the fingerprint of the heads it measured, so that a model card is never given the results
of another head (see `jetspec_hf.hub.checks`). It hashes each tensor's name, dtype, shape and bytes as stored, so a
head re-saved unchanged (another folder, another file layout) keeps its fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path


def _digest(named_tensors: Iterable[tuple[str, object]]) -> str:
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_dict_fingerprint(state_dict: Mapping[str, object]) -> str:
    """The fingerprint of a model's `state_dict()` (what `save_pretrained` writes, in the same dtype)."""
    return _digest(state_dict.items())


def folder_fingerprint(folder: str | Path) -> str | None:
    """The fingerprint of the weights in a folder's `*.safetensors` files; `None` when it has none."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None

    def tensors():
        for path in files:
            with safe_open(str(path), framework="pt") as weights:
                for name in weights.keys():
                    yield name, weights.get_tensor(name)

    return _digest(tensors())


__all__ = ["folder_fingerprint", "state_dict_fingerprint"]
