"""Tapped features of the frozen target, computed on the fly or cached to disk as safetensors shards.

The head reads the RAW outputs of the decoder layers in `target_layer_ids`, concatenated: `[b, T, k*H]`. They are
captured with forward hooks on `target.model.layers[L]` (the same capture the decoding loop uses), not with
`output_hidden_states=True`, which keeps every layer and whose last entry is post-norm. Only the decoder runs:
the target's lm_head is applied later, to the few rows that the KL term needs.
"""

from __future__ import annotations

import bisect
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
    """What the frozen target says about one batch.

    Attributes:
        features: the tapped layers `[b, T, k*H]`.
        final_hidden: the final-normed hidden states `[b, T, H]`, if asked.
        labels: `[b, T]` the target's greedy token at each position given the tokens before it (position 0 keeps
            its own token: nothing predicts it), if asked.
        teacher_ids, teacher_logp: `[b, T, K]` the K most likely tokens at each position and their
            log-probabilities under the target (soft labels), if asked.
    """

    features: torch.Tensor
    final_hidden: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    teacher_ids: torch.Tensor | None = None
    teacher_logp: torch.Tensor | None = None


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
    """Runs the frozen target once on token ids and returns the tapped features, and, if asked, the final hidden
    states, the target's greedy labels and its top-`teacher_top_k` soft labels: one target pass per token gives
    everything training needs.

    Batches are right-padded, so no attention mask is needed: under causal attention a real position never sees
    the padding after it, and padded rows are never read by the objective.
    """

    def __init__(self, target: nn.Module, layer_ids: list[int], with_final_hidden: bool = False,
                 with_labels: bool = False, teacher_top_k: int = 0):
        self.target = target
        self.layer_ids = check_layer_ids(target, layer_ids)
        self.with_final_hidden = with_final_hidden
        self.with_labels = with_labels or teacher_top_k > 0
        self.teacher_top_k = teacher_top_k

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> TargetFeatures:
        with TappedLayerCapture(decoder_layers(self.target), self.layer_ids) as capture:
            outputs = self.target.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            features = capture.features()
        hidden = outputs.last_hidden_state
        result = TargetFeatures(features=features, final_hidden=hidden if self.with_final_hidden else None)
        if self.with_labels:
            # Position t's logits predict position t + 1: shift by one, position 0 keeps its own token.
            logits = self.target.get_output_embeddings()(hidden[:, :-1]).float()
            labels = input_ids.clone()
            labels[:, 1:] = logits.argmax(-1)
            result.labels = labels
            if self.teacher_top_k:
                top = torch.log_softmax(logits, dim=-1).topk(self.teacher_top_k, dim=-1)
                batch, length = input_ids.shape
                result.teacher_ids = torch.zeros(batch, length, self.teacher_top_k, dtype=torch.long,
                                                 device=input_ids.device)
                result.teacher_logp = torch.zeros(batch, length, self.teacher_top_k, device=input_ids.device)
                result.teacher_ids[:, 1:], result.teacher_logp[:, 1:] = top.indices, top.values
        return result


def _shard_complete(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


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
    [tokens, H]`, `labels [tokens]`, `teacher_ids` / `teacher_logp [tokens, K]`, and `offsets [count + 1]` (row
    range of each sequence). Inside a shard, batches are formed in length order (less padding). A shard is written
    under a temporary name and renamed when complete, so an interrupted build resumes at the first missing shard
    (same data, same layers). The manifest, written last, records the tapped layers and the data fingerprint, so a
    cache built for other data or other layers is refused rather than silently used.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plan_path = output_dir / "plan.json"
    plan = {"fingerprint": fingerprint, "target_layer_ids": extractor.layer_ids, "shard_size": shard_size,
            "teacher_top_k": extractor.teacher_top_k, "labels": extractor.with_labels,
            "final_hidden": extractor.with_final_hidden, "dtype": str(dtype).replace("torch.", "")}
    if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
        raise ValueError(f"{output_dir} holds part of a feature cache built with other settings or data; delete it "
                         "or choose another folder.")
    plan_path.write_text(json.dumps(plan, indent=2))
    shards = []
    progress = progress_bar(total=len(sequences), desc="caching features", disable=not show_progress)
    for shard_index, shard_start in enumerate(range(0, len(sequences), shard_size)):
        shard_sequences = sequences[shard_start : shard_start + shard_size]
        file_name = f"shard-{shard_index:05d}.safetensors"
        shards.append({"file": file_name, "start": shard_start, "count": len(shard_sequences)})
        if _shard_complete(output_dir / file_name):
            progress.update(len(shard_sequences))
            continue
        rows: dict[str, list[torch.Tensor | None]] = {
            name: [None] * len(shard_sequences) for name in ("features", "final_hidden", "labels", "teacher_ids",
                                                            "teacher_logp")
        }
        order = sorted(range(len(shard_sequences)), key=lambda i: len(shard_sequences[i]))
        for batch_start in range(0, len(order), batch_size):
            members = order[batch_start : batch_start + batch_size]
            lengths = [len(shard_sequences[i]) for i in members]
            ids = torch.full((len(members), max(lengths)), pad_token_id, dtype=torch.long)
            for row, member in enumerate(members):
                ids[row, : lengths[row]] = torch.tensor(shard_sequences[member], dtype=torch.long)
            out = extractor(ids.to(device))
            for name in rows:
                value = getattr(out, name)
                if value is None:
                    continue
                # Ids stay integers; everything else is stored in the cache's dtype.
                stored = torch.int32 if name in ("labels", "teacher_ids") else dtype
                for row, (member, length) in enumerate(zip(members, lengths)):
                    rows[name][member] = value[row, :length].to("cpu", stored)
            progress.update(len(members))
        offsets = torch.tensor([0] + [len(s) for s in shard_sequences]).cumsum(0)
        tensors = {"offsets": offsets}
        for name, pieces in rows.items():
            if pieces[0] is not None:
                tensors[name] = torch.cat(pieces).contiguous()
        partial = output_dir / (file_name + ".partial")
        save_file(tensors, str(partial))
        partial.rename(output_dir / file_name)
    progress.close()
    manifest = {
        "format_version": CACHE_FORMAT_VERSION,
        "target_layer_ids": extractor.layer_ids,
        "final_hidden": extractor.with_final_hidden,
        "labels": extractor.with_labels,
        "teacher_top_k": extractor.teacher_top_k,
        "hidden_size": int(getattr(extractor.target.config, "hidden_size", 0)),
        "num_sequences": len(sequences),
        "fingerprint": fingerprint,
        "dtype": str(dtype).replace("torch.", ""),
        "shards": shards,
    }
    # Written last: a manifest on disk means every shard it names is complete.
    (output_dir / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return output_dir


def combine_feature_caches(sources: list[str | os.PathLike], output_dir: str | os.PathLike,
                           fingerprint: str) -> Path:
    """A cache over the concatenation of the sources' sequences (in order) without copying a shard: the new
    manifest points at the sources' shard files. `fingerprint` is that of the concatenated records
    (`data.fingerprint_sequences`), so that a run over them finds this cache. The sources must tap the same
    layers and hold the same fields."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifests = [FeatureCache(source).manifest for source in sources]
    first = manifests[0]
    for source, manifest in zip(sources, manifests):
        for field_name in ("target_layer_ids", "final_hidden", "labels", "teacher_top_k", "dtype", "format_version"):
            if manifest.get(field_name) != first.get(field_name):
                raise ValueError(f"{source}: its {field_name} ({manifest.get(field_name)}) differs from "
                                 f"{sources[0]}'s ({first.get(field_name)}); caches combine only when they agree.")
    shards, start = [], 0
    for source, manifest in zip(sources, manifests):
        for shard in manifest["shards"]:
            location = Path(os.path.relpath(Path(source).resolve() / shard["file"], output_dir.resolve()))
            shards.append({"file": str(location), "start": start + shard["start"], "count": shard["count"]})
        start += manifest["num_sequences"]
    manifest = {**first, "num_sequences": start, "fingerprint": fingerprint, "shards": shards}
    (output_dir / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return output_dir


class FeatureCache:
    """Reads a cache written by `build_feature_cache`; `get(i)` returns sequence i's `TargetFeatures` (unbatched).

    Shards are opened lazily with `safe_open` and sliced, so only the rows asked for are read from disk. A cache
    may tap more layers than a head reads: `select_layers` picks the head's, in the head's order.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / CACHE_MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.cache_dir} is not a feature cache (no {CACHE_MANIFEST}).")
        self.manifest = json.loads(manifest_path.read_text())
        self._handles: dict[str, object] = {}
        self._offsets: dict[str, list[int]] = {}
        self._columns: torch.Tensor | None = None
        self._starts: list[int] | None = None

    @staticmethod
    def exists(cache_dir: str | os.PathLike) -> bool:
        """Whether a complete cache (manifest written) is at `cache_dir`."""
        return (Path(cache_dir) / CACHE_MANIFEST).is_file()

    @property
    def has_labels(self) -> bool:
        return bool(self.manifest.get("labels"))

    @property
    def teacher_top_k(self) -> int:
        return int(self.manifest.get("teacher_top_k") or 0)

    def check(self, fingerprint: str, layer_ids: list[int], need_final_hidden: bool,
              need_teacher: bool = False) -> None:
        """Raise if the cache was built for other data, lacks a tapped layer the head reads, or lacks what the loss
        needs."""
        problems = []
        if self.manifest.get("format_version") != CACHE_FORMAT_VERSION:
            problems.append(f"format version {self.manifest.get('format_version')} != {CACHE_FORMAT_VERSION}")
        if self.manifest["fingerprint"] != fingerprint:
            problems.append("it was built from different token sequences")
        missing = [i for i in layer_ids if i not in self.manifest["target_layer_ids"]]
        if missing:
            problems.append(f"it taps layers {self.manifest['target_layer_ids']}, the head reads {list(layer_ids)}")
        if need_final_hidden and not self.manifest["final_hidden"] and not (need_teacher and self.teacher_top_k):
            problems.append("it has neither final hidden states nor the target's top-k, which the KL term needs")
        if problems:
            raise ValueError(
                f"Feature cache {self.cache_dir} does not fit this run: " + "; ".join(problems) + ". "
                "Point --cache-features at a new folder (or delete this one) to rebuild it."
            )

    def select_layers(self, layer_ids: list[int]) -> None:
        """Return only these tapped layers' features from now on."""
        cached = list(self.manifest["target_layer_ids"])
        if cached == list(layer_ids):
            self._columns = None
            return
        width = int(self.manifest.get("hidden_size") or 0)
        if not width:
            raise ValueError(f"{self.cache_dir}: the manifest has no hidden_size, so its layers cannot be selected.")
        self._columns = torch.cat([torch.arange(cached.index(i) * width, (cached.index(i) + 1) * width)
                                   for i in layer_ids])

    def __len__(self) -> int:
        return int(self.manifest["num_sequences"])

    def _locate(self, index: int) -> tuple[dict, int]:
        shards = self.manifest["shards"]
        if self._starts is None:
            self._starts = [shard["start"] for shard in shards]
        position = bisect.bisect_right(self._starts, index) - 1
        if position >= 0 and index < shards[position]["start"] + shards[position]["count"]:
            return shards[position], index - shards[position]["start"]
        raise IndexError(f"sequence {index} is not in the feature cache ({len(self)} sequences)")

    def _handle(self, file_name: str):
        if file_name not in self._handles:
            handle = safe_open(str(self.cache_dir / file_name), framework="pt")
            self._handles[file_name] = handle
            self._offsets[file_name] = handle.get_tensor("offsets").tolist()
        return self._handles[file_name], self._offsets[file_name]

    def get(self, index: int) -> TargetFeatures:
        """Features `[T, k*H]` (and whatever else the cache holds) of sequence `index`."""
        shard, local = self._locate(index)
        handle, offsets = self._handle(shard["file"])
        start, end = offsets[local], offsets[local + 1]
        names = set(handle.keys())

        def read(name):
            return handle.get_slice(name)[start:end] if name in names else None

        features = read("features")
        if self._columns is not None:
            features = features[:, self._columns]
        return TargetFeatures(features=features, final_hidden=read("final_hidden"), labels=read("labels"),
                              teacher_ids=read("teacher_ids"), teacher_logp=read("teacher_logp"))

    def batch(self, indices: list[int], length: int, device: torch.device | str = "cpu") -> TargetFeatures:
        """Right-padded (with zeros) features of several sequences, `[b, length, ...]`; labels and teacher ids as
        int64."""
        items = [self.get(i) for i in indices]
        result = {}
        for name in ("features", "final_hidden", "labels", "teacher_ids", "teacher_logp"):
            first = getattr(items[0], name)
            if first is None:
                result[name] = None
                continue
            dtype = torch.long if name in ("labels", "teacher_ids") else first.dtype
            padded = torch.zeros(len(items), length, *first.shape[1:], dtype=dtype)
            for row, item in enumerate(items):
                value = getattr(item, name)
                padded[row, : value.shape[0]] = value
            result[name] = padded.to(device)
        return TargetFeatures(**result)


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
    "combine_feature_caches",
    "check_layer_ids",
    "decoder_layers",
]
