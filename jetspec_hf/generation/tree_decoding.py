"""The tree decoding loop: draft → tree → verify → accept → cache update, once per round.

`tree_decoding` is a `generate(custom_generate=...)` callable: transformers prepares the inputs, the cache, the
logits processors and the stopping criteria, then hands them over. `jetspec_hf.enable(target)` routes
`target.generate(..., assistant_model=<JetSpecDraftModel>)` here, after every check has passed.

Invariant between rounds: the target's cache holds every committed token but the last one, the anchor, which is
the root of the next tree (its keys/values and tapped features come from that round's verify pass). The head's
context covers the same positions. The prefill's own logits give the first new token, as in plain decoding.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.utils import logging

from ..modeling_jetspec import JetSpecDraftModel
from .acceptance import TreeWalk, walk_tree
from .budget import BudgetPolicy, FixedBudget
from .cache import attach_draft_context, draft_context_of, keep_accepted_path
from .capture import TappedLayerCapture
from .drafting import HeadDrafter
from .lookup import PromptLookup
from .outputs import JetSpecGenerateOutput
from .profiling import RoundProfiler, stage
from .stopping import tokens_before_stop
from .tree import DraftTree, build_tree, depth_candidates
from .validation import TreeSettings, count_left_padding
from .verification import prefill, verify_tree

logger = logging.get_logger(__name__)


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
    drafter: HeadDrafter | None = None,
    **model_kwargs,
) -> JetSpecGenerateOutput | torch.LongTensor:
    """Tree speculative decoding of one sequence; output identical to plain `generate` (see the module doc).

    Args:
        model: the Qwen3 / Qwen3-MoE target.
        input_ids: `(1, L)` prompt, as prepared by `generate`.
        logits_processor, stopping_criteria, generation_config: as prepared by `generate`.
        draft_head: the JetSpec / DFlash head.
        tree_settings: budget, width, depth, expansion rule and prompt lookup of each round's tree.
        streamer: receives each committed token, then `end()` (`generate` already sent the prompt).
        round_profiler: optional stage timer (see `RoundProfiler`).
        budget_policy: how many nodes each round verifies (default: `tree_settings.budget` every round).
        drafter: what drafts each block (default: a `HeadDrafter` of `draft_head`; benchmarks pass stand-ins).
        model_kwargs: `cache`, `attention_mask`, ... prepared by `generate`.
    """
    # Leading padding stays in `input_ids` (processors and stopping criteria see it, as in plain decoding) but
    # never enters the cache: positions then start at the first real token, as plain decoding's do.
    padding_length = count_left_padding(model_kwargs.get("attention_mask"))
    device = input_ids.device
    cache = model_kwargs["cache"]
    policy = budget_policy or FixedBudget(tree_settings.budget)
    drafting = policy.max_budget > 1
    record = _GenerationRecord(generation_config, lookup=drafting and bool(tree_settings.lookup_tokens))
    drafter = drafter or HeadDrafter(draft_head, model.get_input_embeddings(), model.get_output_embeddings())
    cached_length = _resume(cache, drafter, draft_head, input_ids[0, padding_length:])
    lookup = None
    if drafting and tree_settings.lookup_tokens:
        lookup = PromptLookup(tree_settings.lookup_tokens)
        lookup.extend(input_ids[0, padding_length:].tolist())
    depth_cap = _DepthCap(tree_settings.depth, enabled=drafter.causal)
    capture = TappedLayerCapture(model.model.layers, draft_head.config.target_layer_ids)
    timing = round_profiler.generation(device) if round_profiler else nullcontext()

    try:
        with timing, capture, torch.inference_mode():
            with stage(round_profiler, "prefill", device):
                logits, features = prefill(
                    model, input_ids[:, padding_length + cached_length :], cached_length, cache, capture,
                    generation_config.prefill_chunk_size,
                )
                if drafting:
                    drafter.add_context(features)
                # The prefill's last row is a one-node "tree" rooted at the last prompt token.
                walk = walk_tree(
                    DraftTree.root_only(int(input_ids[0, -1])), logits, input_ids, logits_processor,
                    generation_config.do_sample, keep_scores=record.keep_scores, keep_logits=record.keep_logits,
                )
                input_ids, committed, finished = record.commit(walk, input_ids, stopping_criteria, streamer)
                if lookup is not None:
                    lookup.extend(walk.tokens[:committed])

            while not finished:
                prefix_length = input_ids.shape[1] - padding_length - 1
                anchor = walk.tokens[committed - 1]
                # Never draft deeper than the tokens still allowed: a round commits at most depth + 1 tokens.
                depth = min(depth_cap.depth, generation_config.max_length - input_ids.shape[1] - 1)

                draft_now = drafting and depth > 0 and policy.wants_draft(prefix_length)
                with stage(round_profiler, "draft", device):
                    depth_logits = drafter.draft(input_ids[:, -1:], depth) if draft_now else None
                with stage(round_profiler, "tree", device):
                    branch = lookup.branch(depth) if lookup is not None and depth_logits is not None else None
                    if depth_logits is None:
                        tree = DraftTree.root_only(anchor)
                    else:
                        candidates = depth_candidates(
                            depth_logits, tree_settings.width, branch.tokens if branch else None
                        )
                        tree = build_tree(
                            anchor, candidates, policy.max_budget, tree_settings.width,
                            expansion=tree_settings.expansion, branch=branch,
                        )
                        tree = tree.truncated(policy.choose(tree, prefix_length))
                        depth_cap.observe(tree)
                with stage(round_profiler, "verify", device):
                    node_logits, node_features = verify_tree(model, tree, prefix_length, cache, capture, device)
                with stage(round_profiler, "accept", device):
                    walk = walk_tree(
                        tree, node_logits, input_ids, logits_processor, generation_config.do_sample,
                        keep_scores=record.keep_scores, keep_logits=record.keep_logits,
                    )
                    input_ids, committed, finished = record.commit(walk, input_ids, stopping_criteria, streamer)
                    record.round(committed, len(tree))
                    policy.observe(tree, len(walk.path) - 1)
                    if lookup is not None:
                        decided, accepted = _branch_outcome(tree, branch, walk.tokens[:committed])
                        lookup.record(decided, accepted)
                        lookup.extend(walk.tokens[:committed])
                        record.lookup_lengths.append(accepted)
                if round_profiler is not None:
                    round_profiler.rounds += 1
                with stage(round_profiler, "cache", device):
                    # Keep the root and the accepted nodes whose tokens were committed before any stop: afterwards
                    # the cache holds every committed token but the last, exactly as plain decoding leaves it.
                    kept_path = walk.path[:committed]
                    keep_accepted_path(cache, prefix_length, kept_path)
                    if drafting:
                        drafter.add_context(node_features[:, kept_path])
    finally:
        if streamer is not None:
            streamer.end()

    # The returned cache carries the head's context, so that a later call that passes it back continues drafting.
    attach_draft_context(cache, drafter.context(input_ids[0, padding_length:-1].tolist()))
    # A fresh tensor outside inference mode: callers may edit the returned ids in place.
    input_ids = input_ids.clone()
    if not generation_config.return_dict_in_generate:
        return input_ids
    return record.output(input_ids, cache, getattr(policy, "expected_accepted", None))


class _GenerationRecord:
    """What a call returns besides the ids: scores and logits when asked for, and per-round statistics."""

    def __init__(self, generation_config: GenerationConfig, lookup: bool):
        as_dict = bool(generation_config.return_dict_in_generate)
        self.keep_scores = as_dict and bool(generation_config.output_scores)
        self.keep_logits = as_dict and bool(generation_config.output_logits)
        self.scores: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.accepted_lengths: list[int] = []
        self.tree_sizes: list[int] = []
        self.lookup_lengths: list[int] | None = [] if lookup else None

    def commit(
        self, walk: TreeWalk, input_ids: torch.LongTensor, stopping_criteria: StoppingCriteriaList, streamer
    ) -> tuple[torch.LongTensor, int, bool]:
        """Append the walk's tokens up to the first one at which plain decoding would stop.

        Returns the extended ids, how many tokens were kept, and whether generation is finished.
        """
        if self.keep_scores:
            self.scores.extend(walk.scores)
        kept, finished = tokens_before_stop(
            walk.tokens, input_ids, stopping_criteria, self.scores if self.keep_scores else None
        )
        if self.keep_scores:
            del self.scores[len(self.scores) - len(walk.tokens) + kept :]
        if self.keep_logits:
            self.logits.extend(walk.logits[:kept])
        input_ids = torch.cat([input_ids, input_ids.new_tensor([walk.tokens[:kept]])], dim=1)
        if streamer is not None:
            for token in walk.tokens[:kept]:
                streamer.put(torch.tensor([token]))
        return input_ids, kept, finished

    def round(self, committed: int, tree_size: int) -> None:
        self.accepted_lengths.append(committed)
        self.tree_sizes.append(tree_size)

    def output(self, sequences: torch.LongTensor, cache, expected_accepted: list[float] | None = None
               ) -> JetSpecGenerateOutput:
        return JetSpecGenerateOutput(
            sequences=sequences,
            scores=tuple(self.scores) if self.keep_scores else None,
            logits=tuple(self.logits) if self.keep_logits else None,
            cache=cache,
            accepted_lengths=self.accepted_lengths,
            tree_sizes=self.tree_sizes,
            lookup_lengths=self.lookup_lengths,
            expected_accepted=expected_accepted,
        )


class _DepthCap:
    """How deep to draft the next block: a causal head's block is cut after the deepest depth its tree will use.

    Each round's tree shows how deep the budget reached; the next block drafts two depths beyond that, so a tree
    that grows deeper round by round is never held back for long, and a shallow one does not pay for depths it
    never uses. A bidirectional head always drafts the full block (its rows see every other row).
    """

    def __init__(self, max_depth: int, enabled: bool):
        self.max_depth = max_depth
        self.enabled = enabled
        self.depth = max_depth

    def observe(self, tree: DraftTree) -> None:
        if self.enabled and len(tree) > 1:
            self.depth = min(self.max_depth, max(tree.depths) + 2)


def _branch_outcome(tree: DraftTree, branch, committed_tokens: list[int]) -> tuple[int, int]:
    """(branch tokens the target decided on, how many of them it accepted) for the lookup's acceptance estimate."""
    if branch is None:
        return 0, 0
    children, node, in_tree = tree.children(), 0, 0
    for token in branch.tokens:
        node = children[node].get(token)
        if node is None:
            break
        in_tree += 1
    accepted = 0
    for token, drafted in zip(committed_tokens, branch.tokens[:in_tree]):
        if token != drafted:
            break
        accepted += 1
    return min(accepted + 1, in_tree), accepted


def _resume(cache, drafter: HeadDrafter, head: JetSpecDraftModel, real_ids: torch.Tensor) -> int:
    """Continue from a cache passed in by the caller; returns how many leading tokens it already holds.

    A cache returned by an earlier tree-decoding call with this head carries the head's context too, and both
    continue. Any other non-empty cache (plain decoding's, or one extended since) continues for the target, and the
    head drafts from the new tokens only.
    """
    cached_length = cache.get_seq_length()
    if cached_length == 0:
        return 0
    if cached_length >= real_ids.shape[0]:
        raise ValueError(
            f"The passed cache already holds {cached_length} positions but the input has {real_ids.shape[0]} tokens: "
            "pass `input_ids` that extend the cached sequence by at least one token (the full sequence, as for "
            "plain `generate`)."
        )
    context = draft_context_of(cache)
    if context is not None and context.tokens:
        known = min(len(context.tokens), cached_length)
        if real_ids[:known].tolist() != context.tokens[:known]:
            raise ValueError(
                "The passed cache was built for another sequence: its tokens differ from the start of `input_ids`. "
                "Pass the full sequence the cache was returned with (e.g. `out.sequences` plus the new tokens)."
            )
    if context is not None and context.belongs_to(head) and len(context.tokens) == cached_length:
        drafter.resume(context)
    else:
        logger.warning_once(
            "JetSpec: the passed cache carries no draft-head context for its cached positions (it was not returned by "
            "a tree-decoding call with this head, or was extended since). The target continues from the cache; the "
            "head drafts from the new tokens only, which can lower acceptance in this call."
        )
    return cached_length


__all__ = ["tree_decoding"]
