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
from transformers import GenerationConfig, GenerationMixin

from ..generation.validation import resolve_tree_settings

# Method groups that `--methods` selects; plain decoding always runs, as the reference.
METHOD_GROUPS = ("assisted", "lookup", "hf-dflash", "chain", "tree", "dflash-tree")


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
        kind: `plain`, `hf-assisted`, `hf-prompt-lookup`, `hf-dflash`, `jetspec-chain`, `jetspec-tree`,
            `dflash-chain` or `dflash-tree`.
        head: which drafter it uses (`jetspec`, `dflash`, `draft-lm`, `prompt`, or `None` for plain).
        tree_budget, tree_width: the tree shape (tree-path methods only).
        stock: whether it is a stock transformers path; those may fail on a given model, and a failure is then
            recorded as a skip with its reason instead of stopping the benchmark.
        call: `call(input_ids, round_profiler)` → the raw output of `generate`.
        skipped_reason: set when the method cannot run at all (e.g. no draft LM was given).
    """

    name: str
    kind: str
    head: str | None = None
    tree_budget: int | None = None
    tree_width: int | None = None
    stock: bool = False
    call: Callable | None = field(default=None, repr=False)
    skipped_reason: str | None = None

    @property
    def is_tree(self) -> bool:
        """Runs through the JetSpec tree loop (and so can be profiled per round)."""
        return self.kind in {"jetspec-chain", "jetspec-tree", "dflash-chain", "dflash-tree"}

    def generate(self, input_ids: torch.Tensor, round_profiler=None) -> Generation:
        """Greedy-decode one `(1, L)` prompt."""
        output = self.call(input_ids, round_profiler)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        return Generation(
            sequences=sequences,
            accepted_lengths=list(getattr(output, "accepted_lengths", None) or []) or None,
            tree_sizes=list(getattr(output, "tree_sizes", None) or []) or None,
        )


@dataclass(frozen=True)
class MethodSettings:
    """Benchmark knobs that shape the method list."""

    max_new_tokens: int
    budgets: tuple[int, ...]
    tree_width: int | None
    tree_depth: int | None
    prompt_lookup_tokens: int
    groups: tuple[str, ...] = METHOD_GROUPS


def greedy_config(max_new_tokens: int, **extra) -> GenerationConfig:
    """A greedy config; unset fields (eos, pad, ...) are filled from the target's own generation config by
    `generate`."""
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, **extra)


def _stock(target, config: GenerationConfig, **kwargs) -> Callable:
    def call(input_ids, round_profiler=None):
        return GenerationMixin.generate(
            target, input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config, **kwargs
        )

    return call


def _tree(target, head, max_new_tokens: int, budget: int, width: int, depth: int | None) -> Callable:
    config = greedy_config(max_new_tokens, return_dict_in_generate=True)

    def call(input_ids, round_profiler=None):
        return target.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            assistant_model=head,
            tree_budget=budget,
            tree_width=width,
            tree_depth=depth,
            round_profiler=round_profiler,
        )

    return call


def _tree_methods(target, head, label: str, kind_prefix: str, settings: MethodSettings, groups) -> list[Method]:
    methods = []
    if "chain" in groups:
        # A chain is the tree path with one child per node: depth + 1 nodes, root included.
        depth = resolve_tree_settings(head, {"tree_depth": settings.tree_depth}).depth
        methods.append(
            Method(
                name=f"{label} chain",
                kind=f"{kind_prefix}-chain",
                head=kind_prefix,
                tree_budget=depth + 1,
                tree_width=1,
                call=_tree(target, head, settings.max_new_tokens, depth + 1, 1, settings.tree_depth),
            )
        )
    tree_group = "tree" if kind_prefix == "jetspec" else "dflash-tree"
    if tree_group in groups:
        # Unset width: the head config's own default, so that a head is measured the way it ships.
        width = settings.tree_width or resolve_tree_settings(head).width
        for budget in settings.budgets:
            methods.append(
                Method(
                    name=f"{label} tree b={budget}",
                    kind=f"{kind_prefix}-tree",
                    head=kind_prefix,
                    tree_budget=budget,
                    tree_width=width,
                    call=_tree(target, head, settings.max_new_tokens, budget, width, settings.tree_depth),
                )
            )
    return methods


def build_methods(models, settings: MethodSettings) -> list[Method]:
    """Every method, in run order: plain first (the reference), then the stock peers, then the tree path.

    `models` is a `BenchModels`; the target must already be `jetspec_hf.enable`d.
    """
    target, groups = models.target, settings.groups
    new_tokens = settings.max_new_tokens
    methods = [Method(name="plain", kind="plain", stock=True, call=_stock(target, greedy_config(new_tokens)))]

    if "assisted" in groups:
        assisted = Method(name="HF assisted (draft LM)", kind="hf-assisted", head="draft-lm", stock=True)
        if models.draft_lm is None:
            assisted.skipped_reason = "no draft LM given (--draft-lm)"
        else:
            extra = {}
            if models.draft_tokenizer is not None:
                extra = {"tokenizer": models.tokenizer, "assistant_tokenizer": models.draft_tokenizer}
            assisted.call = _stock(target, greedy_config(new_tokens), assistant_model=models.draft_lm, **extra)
        methods.append(assisted)

    if "lookup" in groups:
        k = settings.prompt_lookup_tokens
        config = greedy_config(new_tokens, prompt_lookup_num_tokens=k)
        methods.append(
            Method(name=f"HF prompt lookup (k={k})", kind="hf-prompt-lookup", head="prompt", stock=True,
                   call=_stock(target, config))
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
                       call=_stock(target, config, assistant_model=head))
            )

    for label, _, head_kind, head in heads:
        methods.extend(_tree_methods(target, head, label, head_kind, settings, groups))
    return methods


__all__ = ["Generation", "METHOD_GROUPS", "Method", "MethodSettings", "build_methods", "greedy_config"]
