"""The tree decoding loop: draft → tree → verify → accept → cache update, once per round, for a batch.

`tree_decoding` is a `generate(custom_generate=...)` callable: transformers prepares the inputs, the cache, the
logits processors and the stopping criteria, then hands them over. `jetspec_hf.enable(target)` routes
`target.generate(..., assistant_model=<JetSpecDraftModel>)` here, after every check has passed.

Invariant between rounds: the target's cache holds every committed token of every row but the last one, the
anchor, which is the root of the row's next tree (its keys/values and tapped features come from that round's
verify pass). The head's context covers the same positions. The prefill's own logits give the first new token, as
in plain decoding.

Rows of a batch share the cache's columns. Padding, and rows that keep fewer nodes than others in a round, leave
holes: `key_valid` marks which columns each row really holds, every attention masks the rest, and positions are
each row's own. Finished rows leave the batch; holes are squeezed out when they pile up.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from ..modeling_jetspec import JetSpecDraftModel
from .acceptance import walk_trees
from .budget import BudgetPolicy, FixedBudget
from .cache import (
    attach_draft_context,
    cache_length,
    compact_cache,
    keep_accepted_paths,
    padded_paths,
    prepare_static_cache,
    select_cache_rows,
    static_capacity,
)
from .capture import TappedLayerCapture
from .drafting import MAX_HOLE_FRACTION, Drafter, HeadDrafter, resume_from_cache
from .grammar import row_grammar
from .lookup import PromptLookup
from .outputs import JetSpecGenerateOutput
from .per_row import criteria_for_rows, processors_for_rows
from .profiling import RoundProfiler, stage
from .rows import BatchStopping, DecodingRow, DepthCap, batch_sequences
from .settings import TreeSettings
from .tree import DraftTree, batch_depth_candidates, build_tree
from .verification import prefill, verify_trees

def tree_decoding(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    *,
    draft_head: JetSpecDraftModel,
    tree_settings: TreeSettings,
    streamer=None,
    round_profiler: RoundProfiler | None = None,
    budget_policy: BudgetPolicy | None = None,
    drafter: Drafter | None = None,
    **model_kwargs,
) -> JetSpecGenerateOutput | torch.LongTensor:
    """Tree speculative decoding of a batch; output identical to plain `generate` (see the module doc).

    Args:
        model: the Qwen3 / Qwen3-MoE target.
        input_ids: `(B, L)` prompts, left-padded, as prepared by `generate`.
        logits_processor, stopping_criteria, generation_config: as prepared by `generate`.
        draft_head: the JetSpec / DFlash head.
        tree_settings: budget, width, depth, expansion rule and prompt lookup of each round's tree.
        streamer: receives each committed token, then `end()` (`generate` already sent the prompt; batch size 1).
        round_profiler: optional stage timer (see `RoundProfiler`).
        budget_policy: how many nodes each round verifies, for all rows at once (default: `tree_settings.budget`
            every round).
        drafter: what drafts each block, a `Drafter` (default: a `HeadDrafter` of `draft_head`; benchmarks pass
            stand-ins).
        model_kwargs: `cache`, `attention_mask`, ... prepared by `generate`.
    """
    # Plain decoding returns int64 ids whatever the prompt's integer type (its new tokens are int64).
    input_ids = input_ids.long()
    device = input_ids.device
    batch_size, prompt_length = input_ids.shape
    # Before any work: every processor and criterion must run per row (per_row.py).
    row_processors = processors_for_rows(logits_processor, batch_size)
    row_criteria = criteria_for_rows(stopping_criteria, batch_size)
    cache = model_kwargs["cache"]
    attention_mask = model_kwargs.get("attention_mask")
    policy = budget_policy or FixedBudget(tree_settings.budget)
    drafting = policy.max_budget > 1
    keep_scores = bool(generation_config.return_dict_in_generate and generation_config.output_scores)
    keep_logits = bool(generation_config.return_dict_in_generate and generation_config.output_logits)
    drafter = drafter or HeadDrafter(
        draft_head, model.get_input_embeddings(), model.get_output_embeddings(), batch_size=batch_size,
        draft_window=tree_settings.draft_window,
    )
    cached_length = resume_from_cache(cache, drafter, draft_head, input_ids) if batch_size == 1 else 0
    prepare_static_cache(cache, model, batch_size)
    capacity = static_capacity(cache)
    verify_forward = _compiled_verify(model, model_kwargs, generation_config)
    capture = TappedLayerCapture(model.model.layers, draft_head.config.target_layer_ids)
    # Which cache columns each row really holds; `None` while no row has a hole.
    key_valid = None if attention_mask is None else attention_mask.bool()
    real_lengths = [prompt_length] * batch_size if key_valid is None else key_valid.sum(dim=1).tolist()
    rows = [
        DecodingRow(
            index, input_ids[index : index + 1], real_lengths[index],
            DepthCap(tree_settings.depth, enabled=drafter.causal),
            _new_lookup(tree_settings, input_ids[index], key_valid, index) if drafting else None,
            keep_scores, keep_logits, policy.predicts_acceptance,
            processors=row_processors[index], criteria=row_criteria[index][0], batch_criteria=row_criteria[index][1],
            grammar=row_grammar(row_processors[index]),
        )
        for index in range(batch_size)
    ]
    all_rows = list(rows)
    pad = generation_config._pad_token_tensor
    stopping = BatchStopping(stopping_criteria, batch_size, all_rows,
                             generation_config.max_length - prompt_length,
                             int(pad.flatten()[0]) if pad is not None else 0)
    timing = round_profiler.generation(device) if round_profiler else nullcontext()

    try:
        with timing, capture, torch.inference_mode():
            with stage(round_profiler, "prefill", device):
                logits, features = prefill(
                    model, input_ids[:, cached_length:], cache, capture, attention_mask,
                    generation_config.prefill_chunk_size,
                )
                if drafting:
                    new_valid = None if key_valid is None else key_valid[:, cached_length:]
                    new_counts = None if key_valid is None else new_valid.sum(dim=1).tolist()
                    drafter.add_context(features, new_valid, new_counts)
                # The prefill's last column is a one-node "tree" rooted at each row's last prompt token.
                roots = [DraftTree.root_only(int(token)) for token in input_ids[:, -1].tolist()]
                walks = _walk(rows, roots, logits[:, None], generation_config, keep_scores, keep_logits)
                for row, walk in zip(rows, walks):
                    row.commit(walk)
                    _stream(streamer, row.last_tokens)
                    if row.lookup is not None:
                        row.lookup.extend(row.last_tokens)
                rows, key_valid = _drop_done_rows(rows, stopping, cache, drafter, key_valid)

            while rows:
                prefix_length = cache_length(cache)
                # Never draft deeper than a row may still go: a round commits at most depth + 1 tokens.
                depths = [min(row.depth_cap.depth, generation_config.max_length - row.ids.shape[1] - 1) for row in rows]
                positions = [row.position for row in rows]
                draft_round = drafting and policy.wants_draft(positions)
                drafts = [draft_round and depth > 0 for depth in depths]

                with stage(round_profiler, "draft", device):
                    depth_logits = None
                    if any(drafts):
                        anchors = torch.tensor([[row.anchor] for row in rows], device=device)
                        depth_logits = drafter.draft(anchors, max(depths))
                with stage(round_profiler, "tree", device):
                    trees, branches = _grow_trees(rows, positions, depth_logits, depths, drafts, tree_settings, policy)
                    if capacity is not None:
                        # A static cache has room for so many tree columns; nested trees cut to any size exactly.
                        room = capacity - prefix_length
                        trees = [tree.truncated(room) for tree in trees]
                with stage(round_profiler, "verify", device):
                    node_logits, node_features = verify_trees(
                        model, trees, prefix_length, positions, key_valid, cache, capture,
                        device, forward=verify_forward,
                        bucket_limit=capacity - prefix_length if verify_forward is not None else None,
                    )
                with stage(round_profiler, "accept", device):
                    walks = _walk(rows, trees, node_logits, generation_config, keep_scores, keep_logits)
                    expected = policy.observe(trees, [len(walk.path) - 1 for walk in walks])
                    kept_paths = []
                    for index, (row, tree, walk, branch) in enumerate(zip(rows, trees, walks, branches)):
                        committed = row.commit(walk, stop=stopping.checks_rules(row))
                        _stream(streamer, row.last_tokens)
                        lookup_accepted = None
                        if row.lookup is not None:
                            lookup_accepted = row.lookup.observe_round(tree, branch, row.last_tokens)
                        row.record_round(tree, committed, lookup_accepted,
                                         None if expected is None else expected[index])
                        # Keep the root and the accepted nodes whose tokens were committed before any stop: the
                        # cache then holds every committed token but the last, as plain decoding leaves it.
                        kept_paths.append(walk.path[:committed])
                if round_profiler is not None:
                    _count_round(round_profiler, trees, kept_paths)
                with stage(round_profiler, "cache", device):
                    holes = keep_accepted_paths(cache, prefix_length, kept_paths)
                    holes = None if holes is None else holes.to(device)
                    key_valid = _extend_key_valid(key_valid, holes, prefix_length, max(map(len, kept_paths)), device)
                    if drafting:
                        kept_features, counts = _kept_node_features(node_features, kept_paths)
                        drafter.add_context(kept_features, holes, counts)
                    for row, path in zip(rows, kept_paths):
                        row.position += len(path)
                    rows, key_valid = _drop_done_rows(rows, stopping, cache, drafter, key_valid)
                # A batch's holes are squeezed out once they pile up. A single row's only holes are its padding,
                # which its returned cache keeps where plain decoding keeps it.
                squeeze = batch_size > 1 and rows and key_valid is not None
                if squeeze and _hole_fraction(rows, key_valid) > MAX_HOLE_FRACTION:
                    with stage(round_profiler, "compact", device):
                        key_valid = compact_cache(cache, key_valid)
    finally:
        if streamer is not None:
            streamer.end()

    sequences = batch_sequences(all_rows, prompt_length, generation_config, stopping)
    returned_cache = None
    if batch_size == 1:
        # The returned cache carries the head's context, so that a later call that passes it back continues.
        attach_draft_context(cache, drafter.context(sequences[0, :-1].tolist()))
        returned_cache = cache
    if not generation_config.return_dict_in_generate:
        return sequences
    return _output(all_rows, sequences, returned_cache, keep_scores, keep_logits)


def _stream(streamer, tokens: list[int]) -> None:
    """Send a row's newly committed tokens to the streamer (batch size 1 only), one `put` per token as plain
    decoding sends them."""
    if streamer is not None:
        for token in tokens:
            streamer.put(torch.tensor([token]))


def _walk(rows, trees, node_logits, generation_config, keep_scores: bool, keep_logits: bool):
    """Every row's walk of its verified tree (the prefill's last column is a root-only tree)."""
    return walk_trees(trees, node_logits, [row.ids for row in rows], [row.processors for row in rows],
                      generation_config.do_sample, keep_scores, keep_logits, [row.node_scorer for row in rows])


def _compiled_verify(model, model_kwargs: dict, generation_config: GenerationConfig):
    """The compiled forward that plain decoding would use for its steps here (a static cache, and a device or a
    `compile_config` that allows it), for the verify forwards too; `None` when plain decoding would not compile.

    Only sdpa and eager targets: their compiled verify takes the materialised mask, whose shape repeats round after
    round with a static cache; a flash-attention target's tree attention takes per-round Python values instead.
    """
    if model.config._attn_implementation not in ("sdpa", "eager"):
        return None
    if not model._valid_auto_compile_criteria(model_kwargs, generation_config):
        return None
    return model.get_compiled_call(generation_config.compile_config)


def _new_lookup(tree_settings: TreeSettings, ids: torch.Tensor, key_valid, row: int) -> PromptLookup | None:
    if not tree_settings.lookup_tokens:
        return None
    lookup = PromptLookup(tree_settings.lookup_tokens)
    real = ids if key_valid is None else ids[key_valid[row]]
    lookup.extend(real.tolist())
    return lookup


def _grow_trees(rows, positions, depth_logits, depths, drafts, tree_settings, policy: BudgetPolicy):
    """Each row's tree for this round (root only where the row does not draft), cut to the sizes the budget policy
    chooses for the batch, and its lookup branch."""
    branches = [
        row.lookup.branch(depth) if row.lookup is not None and draft else None
        for row, depth, draft in zip(rows, depths, drafts)
    ]
    candidates = None
    # A row under a grammar ranks its children itself (every row of a batch shares the call's processors).
    if depth_logits is not None and any(row.grammar is None for row in rows):
        candidates = batch_depth_candidates(
            depth_logits, tree_settings.width, [branch.tokens if branch else None for branch in branches]
        )
    grown = [
        build_tree(row.anchor, _child_ranking(row, candidates, depth_logits, index, tree_settings.width),
                   policy.max_budget, tree_settings.width, max_depth=depth, expansion=tree_settings.expansion,
                   branch=branches[index])
        if draft else DraftTree.root_only(row.anchor)
        for index, (row, depth, draft) in enumerate(zip(rows, depths, drafts))
    ]
    if not any(drafts):
        return grown, branches
    trees = [tree.truncated(size) for tree, size in zip(grown, policy.choose(grown, positions))]
    for row, tree in zip(rows, trees):
        row.depth_cap.observe(tree)  # a root-only tree says nothing about depth
    return trees, branches


def _child_ranking(row: DecodingRow, candidates, depth_logits, index: int, width: int):
    """How row `index` ranks its nodes' children: among the tokens its grammar allows (`grammar.py`), else by the
    head's per-depth ranking."""
    if row.grammar is not None:
        return row.grammar.ranking(depth_logits[index], width)
    return candidates[index]


def _extend_key_valid(key_valid, holes, prefix_length: int, added: int, device):
    """`key_valid` after the round's kept columns were appended after `prefix_length` columns (`holes`: which of
    them each row holds)."""
    if key_valid is None and holes is None:
        return None
    batch_size = holes.shape[0] if holes is not None else key_valid.shape[0]
    if key_valid is None:
        key_valid = torch.ones(batch_size, prefix_length, dtype=torch.bool, device=device)
    new = torch.ones(batch_size, added, dtype=torch.bool, device=device) if holes is None else holes
    return torch.cat([key_valid, new], dim=1)


def _kept_node_features(node_features: torch.Tensor, kept_paths: list[list[int]]):
    """The tapped features of each row's kept nodes, `(B, longest, k*H)` (short rows padded), and their counts."""
    if node_features.shape[0] == 1:
        index = torch.tensor(kept_paths[0], device=node_features.device)
        return node_features[:, index], None
    index = torch.tensor(padded_paths(kept_paths), device=node_features.device)
    index = index[:, :, None].expand(-1, -1, node_features.shape[2])
    return node_features.gather(1, index), [len(path) for path in kept_paths]


def _count_round(profiler: RoundProfiler, trees: list[DraftTree], kept_paths: list[list[int]]) -> None:
    """One more round, and what rows of different sizes wasted in it: padding nodes in the verify, holes in the cache."""
    profiler.rounds += 1
    widest, longest = max(map(len, trees)), max(map(len, kept_paths))
    profiler.count("verify_slots", widest * len(trees))
    profiler.count("padding_slots", sum(widest - len(tree) for tree in trees))
    profiler.count("kept_slots", longest * len(kept_paths))
    profiler.count("hole_slots", sum(longest - len(path) for path in kept_paths))


def _hole_fraction(rows, key_valid: torch.Tensor) -> float:
    """The share of the batch's cache columns that are holes, from the host's counts (each row holds its
    `position` real tokens), so that asking costs no device read."""
    return 1.0 - sum(row.position for row in rows) / (len(rows) * key_valid.shape[1])


def _drop_done_rows(rows, stopping, cache, drafter, key_valid):
    """Remove the rows that need no more tokens from the batch (cache, head context, key mask)."""
    keep = [position for position, row in enumerate(rows) if not stopping.is_done(row, rows)]
    if len(keep) == len(rows):
        return rows, key_valid
    if keep:
        select_cache_rows(cache, keep)
        drafter.select_rows(keep)
        if key_valid is not None:
            key_valid = key_valid[keep]
    return [rows[position] for position in keep], key_valid


def _output(rows, sequences, cache, keep_scores: bool, keep_logits: bool) -> JetSpecGenerateOutput:
    rows = sorted(rows, key=lambda row: row.index)
    single = len(rows) == 1
    lookup = rows[0].lookup_lengths is not None
    return JetSpecGenerateOutput(
        sequences=sequences,
        scores=tuple(rows[0].scores) if keep_scores else None,
        logits=tuple(rows[0].logits) if keep_logits else None,
        cache=cache,
        accepted_lengths=rows[0].accepted_lengths if single else [row.accepted_lengths for row in rows],
        tree_sizes=rows[0].tree_sizes if single else [row.tree_sizes for row in rows],
        lookup_lengths=(rows[0].lookup_lengths if single else [row.lookup_lengths for row in rows]) if lookup else None,
        expected_accepted=_expected_accepted(rows, single),
    )


def _expected_accepted(rows, single: bool):
    """Per round, the expected accepted draft tokens of each row's verified tree, where the policy predicts them."""
    expected = [row.expected_accepted for row in rows]
    if all(values is None for values in expected):
        return None
    return expected[0] if single else expected


__all__ = ["tree_decoding"]
