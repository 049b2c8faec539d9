"""Running one method over the prompt set: warm-up, wall time, target forward count, τ, and the lossless check."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..generation.profiling import RoundProfiler
from ..devices import synchronize
from .methods import Method
from .prompts import PromptBatch


class ForwardCounter:
    """Counts forward passes of the target's decoder stack while active.

    The hook sits on the base model (`target.model`), not on the causal-LM wrapper, because the tree loop's prefill
    calls the base model directly; every other target forward goes through it too. Draft models are other modules
    and are not counted.
    """

    def __init__(self, target: torch.nn.Module):
        self.module = target.base_model
        self.count = 0
        self._handle = None

    def _hook(self, module, args, kwargs):
        self.count += 1

    def __enter__(self) -> ForwardCounter:
        self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@dataclass
class Mismatch:
    """Where a method's output first differs from plain greedy decoding on one prompt."""

    prompt: int
    position: int
    expected: int | None
    got: int | None

    def describe(self) -> str:
        """One line for the console."""
        return f"prompt {self.prompt}, new token {self.position}: plain gave {self.expected}, method gave {self.got}"


@dataclass
class MethodResult:
    """Totals of one method over the prompt set."""

    method: Method
    new_tokens: int = 0
    seconds: float = 0.0
    target_forwards: int = 0
    rounds: int = 0
    committed: int = 0
    tree_nodes: int = 0
    outputs: list[list[int]] = field(default_factory=list, repr=False)
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped_reason: str | None = None

    @property
    def tau(self) -> float | None:
        """Tree methods: mean tokens committed per round. Other methods: new tokens per target forward (each
        forward of plain decoding commits one token; an assisted forward commits the accepted run plus one)."""
        if self.skipped_reason is not None:
            return None
        if self.rounds:
            return self.committed / self.rounds
        return self.new_tokens / self.target_forwards if self.target_forwards else None

    @property
    def tokens_per_second(self) -> float | None:
        """Generated tokens over the summed generate-call time."""
        return self.new_tokens / self.seconds if self.seconds > 0 and self.skipped_reason is None else None

    @property
    def target_forwards_per_token(self) -> float | None:
        """Target forwards (prefill included) per generated token."""
        if self.skipped_reason is not None or not self.new_tokens:
            return None
        return self.target_forwards / self.new_tokens

    @property
    def matches_plain(self) -> bool | None:
        """Whether every prompt's output equals plain greedy output; `None` for a skipped method."""
        return None if self.skipped_reason is not None else not self.mismatches


def first_difference(expected: list[int], got: list[int]) -> int | None:
    """Index of the first differing new token (a length difference counts), or `None` when equal."""
    for position, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return position
    return None if len(expected) == len(got) else min(len(expected), len(got))


def _compare(prompt_index: int, expected: list[int], got: list[int]) -> Mismatch | None:
    position = first_difference(expected, got)
    if position is None:
        return None
    return Mismatch(
        prompt=prompt_index,
        position=position,
        expected=expected[position] if position < len(expected) else None,
        got=got[position] if position < len(got) else None,
    )


def _record(result: MethodResult, batch: PromptBatch, generation) -> None:
    """Each row's new tokens (padding a batch's finished rows included, as plain batched decoding pads them)."""
    for row in generation.sequences[:, batch.input_ids.shape[1] :].tolist():
        result.outputs.append(row)
        result.new_tokens += len(row)
    if generation.accepted_lengths:
        result.rounds += len(generation.accepted_lengths)
        result.committed += sum(generation.accepted_lengths)
        result.tree_nodes += sum(generation.tree_sizes or [])


def run_interleaved(
    methods: list[Method],
    prompts: list[PromptBatch],
    target: torch.nn.Module,
    warmup: int = 1,
    repeats: int = 1,
    overall=None,
) -> list[MethodResult]:
    """Time every method on every prompt batch, interleaved call by call, and check each output against plain
    decoding.

    For each batch, each round of `repeats` calls every method once in turn, so that whatever else the machine
    does at that moment falls on all methods alike; each method keeps its fastest call per prompt. Only the
    `generate` call itself is timed (bracketed by device syncs). `methods[0]` must be plain decoding: its outputs
    are the reference. A stock transformers method that raises is recorded as skipped with the exception as its
    reason and drops out; an exception in plain decoding or the tree path propagates. `overall`, a progress bar
    over the whole benchmark, advances by one per `generate` call.
    """
    results = {method.name: MethodResult(method=method, skipped_reason=method.skipped_reason) for method in methods}
    active = [method for method in methods if method.skipped_reason is None]
    device = _device_of(prompts)

    def call(method, batch):
        try:
            return method.generate(batch)
        except Exception as error:  # noqa: BLE001 - a stock path that cannot run this model is reported
            if not method.stock or method.kind == "plain":
                raise
            results[method.name] = MethodResult(method=method, skipped_reason=f"{type(error).__name__}: {error}")
            active.remove(method)
            return None

    for _ in range(warmup):
        for method in list(active):
            call(method, prompts[0])
            _advance(overall)
    with ForwardCounter(target) as counter:
        for batch in prompts:
            fastest = {method.name: float("inf") for method in active}
            for repeat in range(repeats):
                for method in list(active):
                    forwards_before = counter.count
                    synchronize(device)
                    start = time.perf_counter()
                    generation = call(method, batch)
                    synchronize(device)
                    elapsed = time.perf_counter() - start
                    _advance(overall)
                    if generation is None:
                        continue
                    # The fastest call is the one least disturbed by other work on the machine.
                    fastest[method.name] = min(fastest[method.name], elapsed)
                    if repeat == 0:
                        # Outputs and forward counts are deterministic: the first call's are recorded.
                        result = results[method.name]
                        result.target_forwards += counter.count - forwards_before
                        _record(result, batch, generation)
            for method in active:
                results[method.name].seconds += fastest[method.name]

    plain = results[methods[0].name]
    for result in results.values():
        if result is not plain and result.skipped_reason is None:
            for index, (expected, got) in enumerate(zip(plain.outputs, result.outputs)):
                mismatch = _compare(index, expected, got)
                if mismatch is not None:
                    result.mismatches.append(mismatch)
    return [results[method.name] for method in methods]


def _device_of(prompts: list[PromptBatch]) -> torch.device:
    return prompts[0].input_ids.device if prompts else torch.device("cpu")


def profile_method(method: Method, prompts: list[PromptBatch], progress: bool = True, overall=None) -> RoundProfiler:
    """A separate pass of a tree method with a `RoundProfiler`: per-stage wall time, summed over `prompts`.

    Kept apart from the timed pass because the profiler synchronises the device around every stage.
    """
    profiler = RoundProfiler()
    for batch in tqdm(prompts, desc=f"profile {method.name}", leave=False, disable=not progress, position=1):
        method.generate(batch, round_profiler=profiler)
        _advance(overall)
    return profiler


def _advance(overall) -> None:
    if overall is not None:
        overall.update(1)


__all__ = ["ForwardCounter", "MethodResult", "Mismatch", "first_difference", "profile_method", "run_interleaved",
           "synchronize"]
