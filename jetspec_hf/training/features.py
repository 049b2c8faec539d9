"""Tapped features of the frozen target, computed on the fly or cached to disk as safetensors shards.

The head reads the RAW outputs of the decoder layers in `target_layer_ids`, concatenated: `[b, T, k*H]`. They are
captured with forward hooks on `target.model.layers[L]` (the same capture the decoding loop uses), not with
`output_hidden_states=True`, which keeps every layer and whose last entry is post-norm. Only the decoder runs:
the target's lm_head is applied later, to the few rows that the KL term needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..generation.capture import TappedLayerCapture
from ..log import progress_bar
from .batches import Batch

CACHE_MANIFEST = "manifest.json"
CACHE_FORMAT_VERSION = 1


@dataclass
class TargetFeatures:
    """Features of one batch: tapped layers `[b, T, k*H]`, and the final-normed hidden states `[b, T, H]` if asked."""

    features: torch.Tensor
    final_hidden: torch.Tensor | None = None


def decoder_layers(target: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a transformers causal LM (`target.model.layers` for Qwen3)."""
    layers = getattr(target.base_model, "layers", None)
    if layers is None:
        raise ValueError(f"{type(target).__name__} has no `model.layers`: is it a Qwen3-style causal LM?")
    return layers


def check_layer_ids(target: nn.Module, layer_ids: list[int]) -> list[int]:
    """Validate tapped layer ids against the target's depth; returns them as a list of ints."""
    num_layers = len(decoder_layers(target))
    layer_ids = [int(i) for i in layer_ids]
    bad = [i for i in layer_ids if not 0 <= i < num_layers]
    if not layer_ids or bad:
        raise ValueError(
            f"target_layer_ids {layer_ids} must be non-empty and within 0..{num_layers - 1} (the target has "
            f"{num_layers} decoder layers)."
        )
    return layer_ids


class TargetFeatureExtractor:
    """Runs the frozen target's decoder on token ids and returns the tapped features (and final hidden states).

    Batches are right-padded, so no attention mask is needed: under causal attention a real position never sees
    the padding after it, and padded rows are never read by the objective.
    """

    def __init__(self, target: nn.Module, layer_ids: list[int], with_final_hidden: bool = False):
        self.target = target
        self.layer_ids = check_layer_ids(target, layer_ids)
        self.with_final_hidden = with_final_hidden

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> TargetFeatures:
        with TappedLayerCapture(decoder_layers(self.target), self.layer_ids) as capture:
            outputs = self.target.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            features = capture.features()
        final_hidden = outputs.last_hidden_state if self.with_final_hidden else None
        return TargetFeatures(features=features, final_hidden=final_hidden)


def build_feature_cache(
    extractor: TargetFeatureExtractor,
    sequences: list[list[int]],
    output_dir: str | os.PathLike,
    fingerprint: str,
    batch_size: int = 8,
    shard_size: int = 256,
    dtype: torch.dtype = torch.float32,
    pad_token_id: int = 0,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
) -> Path:
    """Compute features for every sequence and write them as safetensors shards plus a manifest.

    Each shard holds `shard_size` sequences, flattened: `features [tokens, k*H]`, optionally `final_hidden
    [tokens, H]`, and `offsets [count + 1]` (row range of each sequence). The manifest records the tapped layers and
    the data fingerprint, so a cache built for other data or other layers is refused rather than silently used.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    progress = progress_bar(total=len(sequences), desc="caching features", disable=not show_progress)
    for shard_index, shard_start in enumerate(range(0, len(sequences), shard_size)):
        shard_sequences = sequences[shard_start : shard_start + shard_size]
        feature_rows, final_rows = [], []
        for batch_start in range(0, len(shard_sequences), batch_size):
            batch = shard_sequences[batch_start : batch_start + batch_size]
            lengths = [len(s) for s in batch]
            ids = torch.full((len(batch), max(lengths)), pad_token_id, dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            out = extractor(ids.to(device))
            for row, length in enumerate(lengths):
                feature_rows.append(out.features[row, :length].to("cpu", dtype))
                if out.final_hidden is not None:
                    final_rows.append(out.final_hidden[row, :length].to("cpu", dtype))
            progress.update(len(batch))
        offsets = torch.tensor([0] + [len(s) for s in shard_sequences]).cumsum(0)
        tensors = {"features": torch.cat(feature_rows).contiguous(), "offsets": offsets}
        if final_rows:
            tensors["final_hidden"] = torch.cat(final_rows).contiguous()
        file_name = f"shard-{shard_index:05d}.safetensors"
        save_file(tensors, str(output_dir / file_name))
        shards.append({"file": file_name, "start": shard_start, "count": len(shard_sequences)})
    progress.close()
    manifest = {
        "format_version": CACHE_FORMAT_VERSION,
        "target_layer_ids": extractor.layer_ids,
        "final_hidden": extractor.with_final_hidden,
        "num_sequences": len(sequences),
        "fingerprint": fingerprint,
        "dtype": str(dtype).replace("torch.", ""),
        "shards": shards,
    }
    # Written last: a manifest on disk means every shard it names is complete.
    (output_dir / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return output_dir


class FeatureCache:
    """Reads a cache written by `build_feature_cache`; `get(i)` returns sequence i's `TargetFeatures` (unbatched).

    Shards are opened lazily with `safe_open` and sliced, so only the rows asked for are read from disk.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / CACHE_MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.cache_dir} is not a feature cache (no {CACHE_MANIFEST}).")
        self.manifest = json.loads(manifest_path.read_text())
        self._handles: dict[str, object] = {}
        self._offsets: dict[str, list[int]] = {}

    @staticmethod
    def exists(cache_dir: str | os.PathLike) -> bool:
        """Whether a complete cache (manifest written) is at `cache_dir`."""
        return (Path(cache_dir) / CACHE_MANIFEST).is_file()

    def check(self, fingerprint: str, layer_ids: list[int], need_final_hidden: bool) -> None:
        """Raise if the cache was built for other data, other tapped layers, or lacks what the loss needs."""
        problems = []
        if self.manifest.get("format_version") != CACHE_FORMAT_VERSION:
            problems.append(f"format version {self.manifest.get('format_version')} != {CACHE_FORMAT_VERSION}")
        if self.manifest["fingerprint"] != fingerprint:
            problems.append("it was built from different token sequences")
        if list(self.manifest["target_layer_ids"]) != list(layer_ids):
            problems.append(f"it taps layers {self.manifest['target_layer_ids']}, the head reads {list(layer_ids)}")
        if need_final_hidden and not self.manifest["final_hidden"]:
            problems.append("it has no final hidden states, which the KL term needs")
        if problems:
            raise ValueError(
                f"Feature cache {self.cache_dir} does not fit this run: " + "; ".join(problems) + ". "
                "Point --cache-features at a new folder (or delete this one) to rebuild it."
            )

    def __len__(self) -> int:
        return int(self.manifest["num_sequences"])

    def _locate(self, index: int) -> tuple[dict, int]:
        for shard in self.manifest["shards"]:
            if shard["start"] <= index < shard["start"] + shard["count"]:
                return shard, index - shard["start"]
        raise IndexError(f"sequence {index} is not in the feature cache ({len(self)} sequences)")

    def _handle(self, file_name: str):
        if file_name not in self._handles:
            handle = safe_open(str(self.cache_dir / file_name), framework="pt")
            self._handles[file_name] = handle
            self._offsets[file_name] = handle.get_tensor("offsets").tolist()
        return self._handles[file_name], self._offsets[file_name]

    def get(self, index: int) -> TargetFeatures:
        """Features `[T, k*H]` (and final hidden `[T, H]`) of sequence `index`."""
        shard, local = self._locate(index)
        handle, offsets = self._handle(shard["file"])
        start, end = offsets[local], offsets[local + 1]
        features = handle.get_slice("features")[start:end]
        final_hidden = handle.get_slice("final_hidden")[start:end] if self.manifest["final_hidden"] else None
        return TargetFeatures(features=features, final_hidden=final_hidden)

    def batch(self, indices: list[int], length: int, device: torch.device | str = "cpu") -> TargetFeatures:
        """Right-padded (with zeros) features of several sequences, `[b, length, ...]`."""
        items = [self.get(i) for i in indices]
        width = items[0].features.shape[-1]
        features = torch.zeros(len(items), length, width, dtype=items[0].features.dtype)
        final_hidden = None
        if items[0].final_hidden is not None:
            final_hidden = torch.zeros(len(items), length, items[0].final_hidden.shape[-1], dtype=features.dtype)
        for row, item in enumerate(items):
            features[row, : item.features.shape[0]] = item.features
            if final_hidden is not None:
                final_hidden[row, : item.final_hidden.shape[0]] = item.final_hidden
        return TargetFeatures(
            features=features.to(device), final_hidden=None if final_hidden is None else final_hidden.to(device)
        )


class FeatureSource:
    """Tapped target features for a batch: computed by the target on the fly, or read from a disk cache."""

    def __init__(self, extractor: TargetFeatureExtractor, cache: FeatureCache | None, device):
        self.extractor = extractor
        self.cache = cache
        self.device = device

    def __call__(self, batch: Batch) -> TargetFeatures:
        if self.cache is not None:
            return self.cache.batch(batch.indices, batch.input_ids.shape[1], self.device)
        return self.extractor(batch.input_ids)


__all__ = [
    "FeatureCache",
    "FeatureSource",
    "TargetFeatureExtractor",
    "TargetFeatures",
    "build_feature_cache",
    "check_layer_ids",
    "decoder_layers",
]
