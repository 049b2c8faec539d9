"""The decoding methods the benchmark compares, each wrapped as "prompt ids in, generated ids out".

Stock transformers paths (plain, assisted, prompt lookup, linear DFlash) are called through
`GenerationMixin.generate(target, ...)`: that is the class's own `generate`, which ignores the per-instance override
that `jetspec_hf.enable` installs, so a head passed there reaches transformers' built-in DFlash generator rather than
our tree loop. Tree methods call `target.generate(..., assistant_model=head)`, the public entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import CompileConfig, GenerationConfig, GenerationMixin, LogitsProcessor, LogitsProcessorList

from ..generation.settings import resolve_tree_settings
from .prompts import PromptBatch

from .options import DEFAULT_METHOD_GROUPS, METHOD_GROUPS  # noqa: E402  (defined where the CLI reads them)

TREE_KINDS = ("jetspec-chain", "jetspec-tree", "jetspec-auto", "jetspec-fanout", "jetspec-hybrid",
              "jetspec-windowed", "dflash-chain", "dflash-tree", "jetspec-tree-compiled",
              "jetspec-grammar-blind")


@dataclass
class Generation:
    """One generate call's result: the full sequence `(1, L)` and, for tree methods, tokens committed per round."""

    sequences: torch.Tensor
    accepted_lengths: list[int] | None = None
    tree_sizes: list[int] | None = None


@dataclass
class Method:
    """A decoding method under test.

    Attributes:
        name: row label in the table and JSON.
        kind: `plain`, `hf-assisted`, `hf-prompt-lookup`, `hf-dflash`, or a tree-path kind (`TREE_KINDS`).
        head: which drafter it uses (`jetspec`, `dflash`, `draft-lm`, `prompt`, or `None` for plain).
        tree_budget, tree_width: the tree shape (tree-path methods only); the budget may be `"auto"`.
        tree_expansion: `node` or `fanout` (tree-path methods only).
        lookup_tokens: length of the prompt-lookup branch (hybrid trees; the chain length for HF prompt lookup).
        stock: whether it is a stock transformers path; those may fail on a given model, and a failure is then
            recorded as a skip with its reason instead of stopping the benchmark.
        call: `call(input_ids, attention_mask, round_profiler)` → the raw output of `generate`.
        skipped_reason: set when the method cannot run at all (e.g. no draft LM was given).
    """

    name: str
    kind: str
    head: str | None = None
    tree_budget: int | str | None = None
    tree_width: int | None = None
    tree_expansion: str | None = None
    lookup_tokens: int | None = None
    stock: bool = False
    call: Callable | None = field(default=None, repr=False)
    skipped_reason: str | None = None

    @property
    def is_tree(self) -> bool:
        """Runs through the JetSpec tree loop (and so can be profiled per round)."""
        return self.kind in TREE_KINDS

    def generate(self, batch: PromptBatch, round_profiler=None) -> Generation:
        """Greedy-decode one batch of prompts (`(1, L)` for one prompt)."""
        output = self.call(batch.input_ids, batch.attention_mask, round_profiler)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        return Generation(
            sequences=sequences,
            accepted_lengths=_flat(getattr(output, "accepted_lengths", None)) or None,
            tree_sizes=_flat(getattr(output, "tree_sizes", None)) or None,
        )


def _flat(per_round) -> list[int]:
    """Per-round statistics of a call, rows of a batch one after the other."""
    if not per_round:
        return []
    return [value for row in per_round for value in row] if isinstance(per_round[0], list) else list(per_round)


@dataclass(frozen=True)
class MethodSettings:
    """Benchmark knobs that shape the method list."""

    max_new_tokens: int
    budgets: tuple[int, ...]
    tree_width: int | None
    tree_depth: int | None
    prompt_lookup_tokens: int
    groups: tuple[str, ...] = DEFAULT_METHOD_GROUPS
    draft_window: int | None = None  # also node-level trees with this draft window (None: not run)
    # Fresh logits processors for each call (e.g. a grammar's, which serves one call), given to every method.
    processors: Callable[[], list] | None = None


def greedy_config(max_new_tokens: int, **extra) -> GenerationConfig:
    """A greedy config; unset fields (eos, pad, ...) are filled from the target's own generation config by
    `generate`."""
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, **extra)


def _mask(input_ids, attention_mask):
    return attention_mask if attention_mask is not None else torch.ones_like(input_ids)


def _fresh(processors: Callable[[], list] | None) -> LogitsProcessorList:
    return LogitsProcessorList(processors() if processors is not None else [])


def _stock(target, config: GenerationConfig, processors=None, **kwargs) -> Callable:
    def call(input_ids, attention_mask=None, round_profiler=None):
        return GenerationMixin.generate(
            target, input_ids, attention_mask=_mask(input_ids, attention_mask), generation_config=config,
            logits_processor=_fresh(processors), **kwargs
        )

    return call


def _tree(target, head, max_new_tokens: int, config_settings: dict | None = None, processors=None,
          **tree_settings) -> Callable:
    config = greedy_config(max_new_tokens, return_dict_in_generate=True, **(config_settings or {}))

    def call(input_ids, attention_mask=None, round_profiler=None):
        return target.generate(
            input_ids,
            attention_mask=_mask(input_ids, attention_mask),
            generation_config=config,
            assistant_model=head,
            round_profiler=round_profiler,
            logits_processor=_fresh(processors),
            **tree_settings,
        )

    return call


class GrammarBlind(LogitsProcessor):
    """Wraps a grammar processor so that the tree path does not recognise it: the head drafts without the grammar
    and the walk calls it token by token, as for any grammar library the tree path does not know (a benchmark
    baseline; not for batches, where unknown processors are refused)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, input_ids, scores):
        return self.processor(input_ids, scores)


def _blind(processors: Callable[[], list]) -> Callable[[], list]:
    return lambda: [GrammarBlind(processor) for processor in processors()]


# The full fan-out baseline keeps version 0.1's width: with node-level trees' cap of 16 it would spend a 16-node
# budget on the root's children alone.
FANOUT_WIDTH = 8


def _tree_method(target, head, label: str, kind: str, head_kind: str, settings: MethodSettings, *, budget: int | str,
                 width: int, expansion: str = "node", lookup_tokens: int | None = None,
                 draft_window: int | None = None, processors=None) -> Method:
    tree_settings = dict(tree_budget=budget, tree_width=width, tree_depth=settings.tree_depth, tree_expansion=expansion)
    if lookup_tokens:
        tree_settings["prompt_lookup_num_tokens"] = lookup_tokens
    if draft_window is not None:
        tree_settings["draft_window"] = draft_window
    return Method(
        name=label,
        kind=kind,
        head=head_kind,
        tree_budget=budget,
        tree_width=width,
        tree_expansion=expansion,
        lookup_tokens=lookup_tokens,
        call=_tree(target, head, settings.max_new_tokens, processors=processors or settings.processors,
                   **tree_settings),
    )


def _tree_methods(target, head, label: str, head_kind: str, settings: MethodSettings, groups) -> list[Method]:
    methods = []
    if "chain" in groups:
        # A chain is the tree path with one child per node: depth + 1 nodes, root included.
        depth = resolve_tree_settings(head, {"tree_depth": settings.tree_depth}).depth
        methods.append(_tree_method(target, head, f"{label} chain", f"{head_kind}-chain", head_kind, settings,
                                    budget=depth + 1, width=1))
    # Unset width: the head's own default, so that a head is measured the way it ships.
    width = settings.tree_width or resolve_tree_settings(head).width
    tree_group = "tree" if head_kind == "jetspec" else "dflash-tree"
    for budget in settings.budgets if tree_group in groups else ():
        methods.append(_tree_method(target, head, f"{label} tree b={budget}", f"{head_kind}-tree", head_kind,
                                    settings, budget=budget, width=width))
    if head_kind != "jetspec":
        return methods
    if "auto" in groups:
        methods.append(_tree_method(target, head, f"{label} tree auto", "jetspec-auto", head_kind, settings,
                                    budget="auto", width=width))
    for budget in settings.budgets if settings.draft_window is not None and "tree" in groups else ():
        window = settings.draft_window
        methods.append(_tree_method(target, head, f"{label} tree b={budget} window={window}", "jetspec-windowed",
                                    head_kind, settings, budget=budget, width=width, draft_window=window))
    for budget in settings.budgets if "fanout" in groups else ():
        methods.append(_tree_method(target, head, f"{label} fan-out tree b={budget}", "jetspec-fanout", head_kind,
                                    settings, budget=budget, width=settings.tree_width or FANOUT_WIDTH,
                                    expansion="fanout"))
    for budget in settings.budgets if "grammar-blind" in groups and settings.processors is not None else ():
        methods.append(_tree_method(target, head, f"{label} tree b={budget} (grammar-blind)", "jetspec-grammar-blind",
                                    head_kind, settings, budget=budget, width=width,
                                    processors=_blind(settings.processors)))
    for budget in settings.budgets if "hybrid" in groups else ():
        k = settings.prompt_lookup_tokens
        methods.append(_tree_method(target, head, f"{label} + lookup (k={k}) b={budget}", "jetspec-hybrid",
                                    head_kind, settings, budget=budget, width=width, lookup_tokens=k))
    return methods


def build_methods(models, settings: MethodSettings) -> list[Method]:
    """Every method, in run order: plain first (the reference), then the stock peers, then the tree path.

    `models` is a `BenchModels`; the target must already be `jetspec_hf.enable`d.
    """
    target, groups = models.target, settings.groups
    new_tokens = settings.max_new_tokens
    processors = settings.processors
    methods = [Method(name="plain", kind="plain", stock=True,
                      call=_stock(target, greedy_config(new_tokens), processors))]

    if "assisted" in groups:
        assisted = Method(name="HF assisted (draft LM)", kind="hf-assisted", head="draft-lm", stock=True)
        if models.draft_lm is None:
            assisted.skipped_reason = "no draft LM given (--draft-lm)"
        else:
            extra = {}
            if models.draft_tokenizer is not None:
                extra = {"tokenizer": models.tokenizer, "assistant_tokenizer": models.draft_tokenizer}
            assisted.call = _stock(target, greedy_config(new_tokens), processors, assistant_model=models.draft_lm,
                                   **extra)
        methods.append(assisted)

    if "lookup" in groups:
        k = settings.prompt_lookup_tokens
        config = greedy_config(new_tokens, prompt_lookup_num_tokens=k)
        methods.append(
            Method(name=f"HF prompt lookup (k={k})", kind="hf-prompt-lookup", head="prompt", lookup_tokens=k,
                   stock=True, call=_stock(target, config, processors))
        )

    # (label in tree-path method names, label in the stock DFlash method name, head kind, head)
    heads = [("JetSpec", "JetSpec", "jetspec", models.head)]
    if models.dflash_head is not None:
        heads.append(("DFlash-head", "DFlash", "dflash", models.dflash_head))

    if "hf-dflash" in groups:
        for _, label, head_kind, head in heads:
            # transformers' own linear DFlash generator reads block_size / target_layer_ids / mask_token_id from the
            # head's config and calls its forward; the same weights, verified as a chain.
            config = greedy_config(new_tokens)
            config.speculation_type = "dflash"
            methods.append(
                Method(name=f"HF DFlash chain ({label} head)", kind="hf-dflash", head=head_kind, stock=True,
                       call=_stock(target, config, processors, assistant_model=head))
            )

    for label, _, head_kind, head in heads:
        methods.extend(_tree_methods(target, head, label, head_kind, settings, groups))
    if "compiled" in groups:
        methods.extend(_compiled_methods(target, models.head, settings))
    return methods


def compile_settings(backend: str = "inductor") -> dict:
    """What makes `generate` compile its forwards on any device, CPU included: a static cache and a
    `compile_config` (for `backend`) that allows every device (transformers' own switch, otherwise GPU-only)."""
    compile_config = CompileConfig(backend=backend)
    compile_config._compile_all_devices = True
    return dict(cache_implementation="static", compile_config=compile_config)


def _compiled_methods(target, head, settings: MethodSettings) -> list[Method]:
    """Plain decoding and node-level trees with the same compile settings: each compiled forward against the other."""
    compiled = compile_settings()
    plain = Method(name="plain (static cache, compiled)", kind="plain-compiled", stock=True,
                   call=_stock(target, greedy_config(settings.max_new_tokens, **compiled), settings.processors))
    width = settings.tree_width or resolve_tree_settings(head).width
    trees = [
        Method(
            name=f"JetSpec tree b={budget} (static cache, compiled)", kind="jetspec-tree-compiled", head="jetspec",
            tree_budget=budget, tree_width=width, tree_expansion="node",
            call=_tree(target, head, settings.max_new_tokens, config_settings=compiled, processors=settings.processors,
                       tree_budget=budget, tree_width=width, tree_depth=settings.tree_depth),
        )
        for budget in settings.budgets
    ]
    return [plain, *trees]


__all__ = ["Generation", "METHOD_GROUPS", "Method", "MethodSettings", "build_methods", "greedy_config"]
