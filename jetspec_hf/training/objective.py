"""The training objective: many drafted blocks per sequence, packed into ONE head forward.

For a sequence of L tokens with tapped target features ``F[0..L-1]`` and an anchor position ``a``, inference drafts
the block ``[tok[a], MASK x (B-1)]`` at positions ``a..a+B-1`` from the context rows ``F[0..a-1]`` (the anchor
itself has no target hidden state yet: it is the tree root). Training reproduces exactly that, for n anchors at
once: the keys are all L context rows followed by the n*B block rows, and a block-sparse additive mask lets block
j's row i see the context rows strictly before ``a_j`` and, inside its own block, rows ``<= i`` (causal, JetSpec)
or every row (bidirectional, DFlash). Blocks never see each other, so one forward equals n independent drafts.

Row d (d = 1..B-1) of a block predicts the token at ``a + d``. The loss is a cross-entropy to those tokens, an
optional temperature-scaled forward KL to the target's next-token distribution at the true prefix (target
logits at ``a + d - 1``), and an optional per-depth weight ``exp(-(d-1)/gamma)``.

With separate `label_ids` (the target's greedy token at every position of text it did not write), depth d is the
target's choice at ``a + d`` given the sequence's own tokens before it. That is what decoding needs only while the
sequence follows the target's greedy path from the anchor on, so depth d is trained only where the tokens at
``a + 1 .. a + d - 1`` equal their labels. On the target's own greedy continuations labels and tokens agree and
every depth counts, as without `label_ids`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ObjectiveSettings:
    """What the loss needs to know about the head and the recipe.

    `block_size`, `mask_token_id` and `causal` must be those of the head's config: the packed mask built here
    replaces the one the head would build itself.
    """

    block_size: int
    mask_token_id: int
    causal: bool
    anchors_per_seq: int = 16
    ce_weight: float = 1.0
    kl_weight: float = 0.0
    kl_temperature: float = 1.0
    depth_gamma: float | None = None

    @classmethod
    def from_head_config(cls, config, **recipe) -> "ObjectiveSettings":
        """Settings whose block geometry comes from a `JetSpecConfig`, and the rest from `recipe`."""
        return cls(
            block_size=config.block_size, mask_token_id=config.mask_token_id, causal=config.causal_head, **recipe
        )

    @property
    def needs_target_logits(self) -> bool:
        """Whether the loss reads the target's distribution (the KL term), not only the token labels."""
        return self.kl_weight > 0


@dataclass
class PackedBlocks:
    """Anchors of one batch and everything derived from them for the packed head forward.

    Shapes: b = batch, n = anchor slots per sequence, B = block size, C = context length (padded sequence length).
    """

    anchors: torch.LongTensor  # [b, n] anchor positions (0 in unused slots)
    valid: torch.BoolTensor  # [b, n] whether a slot holds a real anchor
    block_ids: torch.LongTensor  # [b, n*B] anchor token then mask tokens, per block
    position_ids: torch.LongTensor  # [b, C + n*B] context rows 0..C-1, then a_j..a_j+B-1 per block
    attention_mask: torch.Tensor  # [b, 1, n*B, C + n*B] additive float mask
    labels: torch.LongTensor  # [b, n, B-1] label at a_j + d (the token there, or `label_ids` there)
    label_valid: torch.BoolTensor  # [b, n, B-1]
    label_positions: torch.LongTensor  # [b, n, B-1] = a_j + d (clamped into the sequence)


@dataclass
class ObjectiveOutput:
    """Loss of one batch plus the sums behind the per-depth top-1 agreement (summable across batches/ranks)."""

    loss: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor | None
    correct_per_depth: torch.Tensor  # [B-1] head argmax == label, counted per depth
    count_per_depth: torch.Tensor  # [B-1] number of labelled rows per depth
    accepted_sum: torch.Tensor  # sum over blocks of the longest all-correct prefix of depths (a chain's acceptance)
    num_blocks: torch.Tensor


def sample_anchors(
    lengths: torch.Tensor,
    loss_starts: torch.Tensor,
    block_size: int,
    max_anchors: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """Random anchor positions, at most `max_anchors` per sequence, without repeats, sorted.

    An anchor ``a`` is usable when its whole block lies inside the sequence (``a + B - 1 < length``), when it has at
    least one context row before it (``a >= 1``), and when every label it produces is a trained position
    (``a >= loss_start``: for self-distilled data the continuation starts at the prompt length, and the first
    anchor inference ever sees is the first generated token). Returns `(anchors [b, n], valid [b, n])` with
    ``n >= 1``; unused slots hold anchor 0 and `valid=False`.
    """
    lengths = lengths.tolist()
    loss_starts = loss_starts.tolist()
    chosen: list[torch.Tensor] = []
    for length, loss_start in zip(lengths, loss_starts):
        low, high = max(1, int(loss_start)), int(length) - block_size
        count = high - low + 1
        if count <= 0:
            chosen.append(torch.empty(0, dtype=torch.long))
            continue
        picks = torch.randperm(count, generator=generator)[: min(max_anchors, count)] + low
        chosen.append(picks.sort().values)
    slots = max(1, max(len(c) for c in chosen))
    anchors = torch.zeros(len(chosen), slots, dtype=torch.long)
    valid = torch.zeros(len(chosen), slots, dtype=torch.bool)
    for row, picks in enumerate(chosen):
        anchors[row, : len(picks)] = picks
        valid[row, : len(picks)] = True
    return anchors, valid


def packed_block_mask(
    anchors: torch.Tensor, context_length: int, block_size: int, causal: bool, dtype: torch.dtype
) -> torch.Tensor:
    """Additive attention mask `[b, 1, n*B, C + n*B]` for n packed blocks over C context rows.

    Block j's row i sees context rows ``< a_j`` and, in its own block, rows ``<= i`` (causal) or all (bidirectional);
    nothing of any other block. Every row sees at least itself, so no softmax row is empty.
    """
    batch, slots = anchors.shape
    device = anchors.device
    queries = slots * block_size
    context_rows = torch.arange(context_length, device=device)
    context_visible = context_rows[None, None, :] < anchors[:, :, None]  # [b, n, C]
    context_visible = context_visible[:, :, None, :].expand(batch, slots, block_size, context_length)
    context_visible = context_visible.reshape(batch, queries, context_length)

    offsets = torch.arange(block_size, device=device)
    within = offsets[None, :] <= offsets[:, None] if causal else torch.ones(block_size, block_size, dtype=torch.bool)
    same_block = torch.eye(slots, dtype=torch.bool, device=device)
    block_visible = same_block[:, None, :, None] & within.to(device)[None, :, None, :]  # [n, B, n, B]
    block_visible = block_visible.reshape(queries, queries).expand(batch, queries, queries)

    visible = torch.cat([context_visible, block_visible], dim=-1)[:, None]
    return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, torch.finfo(dtype).min)


def pack_blocks(
    input_ids: torch.LongTensor,
    lengths: torch.Tensor,
    loss_starts: torch.Tensor,
    settings: ObjectiveSettings,
    mask_dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
    label_ids: torch.LongTensor | None = None,
) -> PackedBlocks:
    """Sample anchors (or take the given `(anchors, valid)`) and build the packed head inputs and labels.

    `label_ids` `[b, L]` replaces `input_ids` as the labels, and depth d of a block stays valid only while the
    block's earlier depths' tokens equal their labels (see the module doc).
    """
    device = input_ids.device
    batch, context_length = input_ids.shape
    block = settings.block_size
    if anchors is None:
        anchors, valid = sample_anchors(lengths, loss_starts, block, settings.anchors_per_seq, generator)
    else:
        anchors, valid = anchors
    anchors, valid = anchors.to(device), valid.to(device)
    slots = anchors.shape[1]

    block_ids = torch.full((batch, slots, block), settings.mask_token_id, dtype=input_ids.dtype, device=device)
    block_ids[:, :, 0] = torch.gather(input_ids, 1, anchors)
    offsets = torch.arange(block, device=device)
    block_positions = (anchors[:, :, None] + offsets).reshape(batch, slots * block)
    context_positions = torch.arange(context_length, device=device).expand(batch, context_length)
    position_ids = torch.cat([context_positions, block_positions], dim=1)

    label_positions = anchors[:, :, None] + offsets[1:]
    in_sequence = label_positions < lengths.to(device)[:, None, None]
    trained = label_positions >= loss_starts.to(device)[:, None, None]
    label_valid = valid[:, :, None] & in_sequence & trained
    # Unused slots point anywhere; clamping keeps their (ignored) gathers inside the tensor.
    label_positions = label_positions.clamp(max=context_length - 1)
    flat_positions = label_positions.reshape(batch, -1)
    labels = torch.gather(input_ids, 1, flat_positions).reshape(label_positions.shape)
    if label_ids is not None:
        label_ids = label_ids.to(device)
        on_path = torch.gather(input_ids == label_ids, 1, flat_positions).reshape(label_positions.shape)
        # Depth d needs depths 1..d-1 on the greedy path; depth 1 needs nothing (its prefix ends at the anchor).
        path_so_far = torch.cumprod(on_path.long(), dim=-1)
        label_valid = label_valid & torch.cat([torch.ones_like(path_so_far[..., :1]), path_so_far[..., :-1]], -1).bool()
        labels = torch.gather(label_ids, 1, flat_positions).reshape(label_positions.shape)

    return PackedBlocks(
        anchors=anchors,
        valid=valid,
        block_ids=block_ids.reshape(batch, slots * block),
        position_ids=position_ids,
        attention_mask=packed_block_mask(anchors, context_length, block, settings.causal, mask_dtype),
        labels=labels,
        label_valid=label_valid,
        label_positions=label_positions,
    )


def packed_head_forward(
    head: nn.Module, embed_tokens: nn.Module, features: torch.Tensor, packed: PackedBlocks, block_size: int
) -> torch.Tensor:
    """Run the head once over all packed blocks; returns the final-normed hidden states `[b, n, B, H]`."""
    head_dtype = next(head.parameters()).dtype
    embeds = embed_tokens(packed.block_ids).to(head_dtype)
    hidden = head(
        noise_embeds=embeds,
        context_hidden_states=features.to(head_dtype),
        position_ids=packed.position_ids,
        attention_mask=packed.attention_mask.to(head_dtype),
    ).last_hidden_state
    batch, slots = packed.anchors.shape
    return hidden.view(batch, slots, block_size, hidden.shape[-1])


def depth_weights(block_size: int, gamma: float | None, device=None) -> torch.Tensor:
    """Per-depth loss weights for depths 1..B-1: all ones, or ``exp(-(d-1)/gamma)`` (DFlash's decay)."""
    depths = torch.arange(block_size - 1, device=device, dtype=torch.float32)
    if gamma is None or gamma <= 0:
        return torch.ones_like(depths)
    return torch.exp(-depths / gamma)


def block_objective(
    head: nn.Module,
    embed_tokens: nn.Module,
    lm_head: nn.Module,
    input_ids: torch.LongTensor,
    lengths: torch.Tensor,
    loss_starts: torch.Tensor,
    features: torch.Tensor,
    settings: ObjectiveSettings,
    target_final_hidden: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
    label_ids: torch.LongTensor | None = None,
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
    vocab_ids: torch.LongTensor | None = None,
) -> ObjectiveOutput:
    """Loss and per-depth agreement of the head on one batch.

    Args:
        head: the `JetSpecDraftModel` (possibly wrapped for distributed training).
        embed_tokens, lm_head: the frozen target's input embeddings and output projection.
        input_ids: `[b, L]` right-padded token ids; `lengths` `[b]` real lengths; `loss_starts` `[b]` first position
            whose token is a training label (the prompt length for self-distilled data).
        features: `[b, L, k*H]` raw tapped target features of `input_ids`.
        target_final_hidden: `[b, L, H]` the target's final-normed hidden states, required when the KL term is on
            (the teacher logits are `lm_head` of them, computed only at the rows that are needed).
        generator: drives the anchor sampling; `anchors` = `(anchors, valid)` fixes them instead.
        label_ids: `[b, L]` labels other than the tokens themselves (see `pack_blocks`), or `None`.
        teacher: `(ids, logp)`, each `[b, L, K]`: the target's K most likely tokens at each position and their
            log-probabilities (a feature cache's soft labels). With the KL term on, it is taken against them
            (renormalised over the K) instead of the full distribution from `target_final_hidden`.
        vocab_ids: the head's draft vocabulary (target token ids), or `None` for the whole vocabulary. The head is
            scored over these tokens only; a label outside them is never drafted, so it counts as a miss and takes
            no part in the loss.
    """
    block = settings.block_size
    head_dtype = next(head.parameters()).dtype
    packed = pack_blocks(input_ids, lengths, loss_starts, settings, head_dtype, generator, anchors, label_ids)
    hidden = packed_head_forward(head, embed_tokens, features, packed, block)

    rows = hidden[:, :, 1:][packed.label_valid]  # [M, H], only the labelled rows pay for the lm_head
    target_labels = packed.labels[packed.label_valid]
    depth_index = torch.arange(block - 1, device=target_labels.device).expand_as(packed.labels)[packed.label_valid]
    if vocab_ids is None:
        logits = lm_head(rows.to(lm_head.weight.dtype)).float()
        labels, in_vocab, to_draft = target_labels, None, None
    else:
        logits = F.linear(rows.to(lm_head.weight.dtype), lm_head.weight[vocab_ids]).float()
        to_draft = torch.full((lm_head.weight.shape[0],), -1, dtype=torch.long, device=vocab_ids.device)
        to_draft[vocab_ids] = torch.arange(len(vocab_ids), device=vocab_ids.device)
        labels = to_draft[target_labels]
        in_vocab = labels >= 0

    weights = depth_weights(block, settings.depth_gamma, labels.device)[depth_index]
    loss_weights = weights if in_vocab is None else weights * in_vocab
    weight_sum = loss_weights.sum().clamp(min=1e-8)
    ce = (F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * loss_weights).sum() / weight_sum
    loss = settings.ce_weight * ce

    kl = None
    if settings.needs_target_logits and teacher is not None:
        batch = input_ids.shape[0]
        flat = packed.label_positions.reshape(batch, -1)

        def at_labels(values):
            index = flat[:, :, None].expand(-1, -1, values.shape[-1])
            return torch.gather(values, 1, index).reshape(*packed.label_positions.shape, -1)[packed.label_valid]

        teacher_ids, teacher_logp = at_labels(teacher[0].long()), at_labels(teacher[1].float())
        if to_draft is not None:
            # Teacher tokens outside the draft vocabulary drop out; the rest are renormalised below.
            teacher_ids = to_draft[teacher_ids]
            teacher_logp = teacher_logp.masked_fill(teacher_ids < 0, float("-inf"))
            teacher_ids = teacher_ids.clamp(min=0)
        temperature = settings.kl_temperature
        teacher_p = torch.softmax(teacher_logp / temperature, dim=-1).nan_to_num(0.0)
        student_logp = torch.gather(F.log_softmax(logits / temperature, dim=-1), 1, teacher_ids)
        per_row = (teacher_p * (teacher_p.clamp(min=1e-12).log() - student_logp)).sum(-1) * temperature**2
        kl = (per_row * loss_weights).sum() / weight_sum
        loss = loss + settings.kl_weight * kl
    elif settings.needs_target_logits:
        if target_final_hidden is None:
            raise ValueError("The KL term needs the target's final hidden states (`target_final_hidden`).")
        # The teacher for depth d is the target's next-token distribution after the true prefix ..a+d-1.
        batch = input_ids.shape[0]
        teacher_positions = (packed.label_positions - 1).reshape(batch, -1)
        teacher_hidden = torch.gather(
            target_final_hidden, 1, teacher_positions[:, :, None].expand(-1, -1, target_final_hidden.shape[-1])
        ).reshape(*packed.label_positions.shape, -1)[packed.label_valid]
        with torch.no_grad():
            teacher_logits = lm_head(teacher_hidden.to(lm_head.weight.dtype)).float()
            if vocab_ids is not None:
                teacher_logits = teacher_logits[:, vocab_ids]
        temperature = settings.kl_temperature
        teacher_logp = F.log_softmax(teacher_logits / temperature, dim=-1)
        student_logp = F.log_softmax(logits / temperature, dim=-1)
        per_row = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1) * temperature**2
        kl = (per_row * loss_weights).sum() / weight_sum
        loss = loss + settings.kl_weight * kl

    with torch.no_grad():
        correct = logits.argmax(-1) == labels
        if in_vocab is not None:
            correct &= in_vocab
        correct_per_depth = torch.zeros(block - 1, device=labels.device).index_add_(0, depth_index, correct.float())
        count_per_depth = torch.bincount(depth_index, minlength=block - 1).float()
        # A chain drafted from this block is accepted up to the first wrong depth.
        grid = torch.zeros(packed.label_valid.shape, device=labels.device)
        grid[packed.label_valid] = correct.float()
        accepted_sum = torch.cumprod(grid, dim=-1).sum(-1)[packed.valid].sum()
        num_blocks = packed.valid.sum().float()

    return ObjectiveOutput(
        loss=loss,
        ce=ce.detach(),
        kl=None if kl is None else kl.detach(),
        correct_per_depth=correct_per_depth,
        count_per_depth=count_per_depth,
        accepted_sum=accepted_sum,
        num_blocks=num_blocks,
    )


def summarize_agreement(correct_per_depth: torch.Tensor, count_per_depth: torch.Tensor) -> list[float]:
    """Per-depth top-1 agreement (NaN where a depth had no labelled rows)."""
    return [c / n if n > 0 else math.nan for c, n in zip(correct_per_depth.tolist(), count_per_depth.tolist())]


__all__ = [
    "ObjectiveOutput",
    "ObjectiveSettings",
    "PackedBlocks",
    "block_objective",
    "depth_weights",
    "pack_blocks",
    "packed_block_mask",
    "packed_head_forward",
    "sample_anchors",
    "summarize_agreement",
]
