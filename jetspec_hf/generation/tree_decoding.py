"""The tree decoding loop: draft → tree → verify → accept → cache update, once per round.

`tree_decoding` is a `generate(custom_generate=...)` callable: transformers prepares the inputs, the cache, the
logits processors and the stopping criteria, then hands them over. `jetspec_hf.enable(target)` routes
`target.generate(..., assistant_model=<JetSpecDraftModel>)` here.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.cache_utils import DynamicCache

from ..modeling_jetspec import JetSpecDraftModel
from .acceptance import walk_tree
from .cache import keep_accepted_path
from .capture import TappedLayerCapture
from .drafting import HeadDrafter
from .outputs import JetSpecGenerateOutput
from .profiling import RoundProfiler, stage
from .stopping import tokens_before_stop
from .tree import DraftTree, build_tree
from .verification import prefill, verify_tree
from .validation import TreeSettings, check_generation_call, count_left_padding


@torch.no_grad()
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
    **model_kwargs,
) -> JetSpecGenerateOutput | torch.LongTensor:
    """Tree speculative decoding of one sequence; output identical to plain `generate` (see the module doc).

    Args:
        model: the Qwen3 / Qwen3-MoE target.
        input_ids: `(1, L)` prompt, as prepared by `generate`.
        logits_processor, stopping_criteria, generation_config: as prepared by `generate`.
        draft_head: the JetSpec / DFlash head.
        tree_settings: node budget, children per expansion and maximum depth of each round's tree.
        streamer: receives each committed token, then `end()` (`generate` already sent the prompt).
        round_profiler: optional stage timer (see `RoundProfiler`).
        model_kwargs: `cache`, `attention_mask`, ... prepared by `generate`.
    """
    check_generation_call(model, input_ids, generation_config, model_kwargs)
    # Leading padding stays in `input_ids` (processors and stopping criteria see it, as in plain decoding) but
    # never enters the cache: positions then start at the first real token, as plain decoding's do.
    padding_length = count_left_padding(model_kwargs.get("attention_mask"))
    device = input_ids.device
    keep_scores = bool(generation_config.return_dict_in_generate and generation_config.output_scores)
    keep_logits = bool(generation_config.return_dict_in_generate and generation_config.output_logits)
    scores, raw_logits, accepted_lengths, tree_sizes = [], [], [], []
    cache = model_kwargs.get("cache")
    if cache is None or cache.get_seq_length() > 0:
        # A cache passed in by the caller would carry positions the tree loop does not know about.
        cache = DynamicCache(config=model.config)
    drafting = tree_settings.budget > 1
    drafter = HeadDrafter(draft_head, model.get_input_embeddings(), model.get_output_embeddings())
    capture = TappedLayerCapture(model.model.layers, draft_head.config.target_layer_ids)
    timing = round_profiler.generation(device) if round_profiler else nullcontext()

    with timing, capture:
        # Invariant at the start of a round: the cache holds every committed token but the last one, the anchor,
        # which is the root of the next tree (its keys/values and features come from that verify pass).
        if input_ids.shape[1] - padding_length > 1:
            with stage(round_profiler, "prefill", device):
                features = prefill(model, input_ids[:, padding_length:-1], cache, capture)
            if drafting:
                drafter.add_context(features)

        anchor_token = int(input_ids[0, -1])  # kept on the host: the walk's tokens are host ints
        finished = False
        while not finished:
            prefix_length = input_ids.shape[1] - padding_length - 1
            # Never draft deeper than the tokens still allowed: a round commits at most depth + 1 tokens.
            depth = min(tree_settings.depth, generation_config.max_length - input_ids.shape[1] - 1)

            with stage(round_profiler, "draft", device):
                depth_logits = drafter.draft(input_ids[:, -1:], depth) if drafting and depth > 0 else None
            with stage(round_profiler, "tree", device):
                if depth_logits is None:
                    tree = DraftTree(tokens=[anchor_token], parents=[-1], depths=[0])
                else:
                    tree = build_tree(anchor_token, depth_logits, tree_settings.budget, tree_settings.width)
            with stage(round_profiler, "verify", device):
                node_logits, node_features = verify_tree(model, tree, prefix_length, cache, capture)
            with stage(round_profiler, "accept", device):
                walk = walk_tree(
                    tree, node_logits, input_ids, logits_processor, generation_config.do_sample,
                    keep_scores=keep_scores, keep_logits=keep_logits,
                )
                input_ids, committed, finished = _commit(
                    walk, input_ids, stopping_criteria, scores, raw_logits, keep_scores, keep_logits, streamer
                )
                accepted_lengths.append(committed)
                tree_sizes.append(len(tree))
                anchor_token = walk.tokens[-1]
            if round_profiler is not None:
                round_profiler.rounds += 1
            if not finished:
                with stage(round_profiler, "cache", device):
                    keep_accepted_path(cache, prefix_length, walk.path)
                    if drafting:
                        drafter.add_context(node_features[:, walk.path])

    if streamer is not None:
        streamer.end()
    if not generation_config.return_dict_in_generate:
        return input_ids
    return JetSpecGenerateOutput(
        sequences=input_ids,
        scores=tuple(scores) if keep_scores else None,
        logits=tuple(raw_logits) if keep_logits else None,
        cache=cache,
        accepted_lengths=accepted_lengths,
        tree_sizes=tree_sizes,
    )


def _commit(walk, input_ids, stopping_criteria, scores, raw_logits, keep_scores, keep_logits, streamer):
    """Append the walk's tokens up to the first one at which plain decoding would stop.

    Returns the extended ids, how many tokens were kept, and whether generation is finished.
    """
    if keep_scores:
        scores.extend(walk.scores)
    kept, finished = tokens_before_stop(walk.tokens, input_ids, stopping_criteria, scores if keep_scores else None)
    if keep_scores:
        del scores[len(scores) - len(walk.tokens) + kept :]
    if keep_logits:
        raw_logits.extend(walk.logits[:kept])
    input_ids = torch.cat([input_ids, input_ids.new_tensor([walk.tokens[:kept]])], dim=1)
    if streamer is not None:
        for token in walk.tokens[:kept]:
            streamer.put(torch.tensor([token]))
    return input_ids, kept, finished


__all__ = ["tree_decoding"]
