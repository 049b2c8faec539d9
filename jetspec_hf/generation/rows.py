"""One sequence of a batch being tree-decoded: its committed ids, its stopping state and its statistics.

Rows of a batch accept different numbers of tokens per round, so each row keeps its own ids (what its logits
processors and stopping criteria see, padding included, exactly as plain decoding's row would), its own position
(real tokens in the target's cache), its own prompt-lookup index and its own per-round record. The budget policy
decides for the whole batch (`budget.py`).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

from .acceptance import NodeScorer, TreeWalk
from .grammar import RowGrammar
from .lookup import PromptLookup
from .stopping import tokens_before_stop
from .tree import DraftTree


class DepthCap:
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


class DecodingRow:
    """The state of one sequence of the batch.

    Attributes:
        index: the row's index in the caller's batch.
        ids: `(1, L)` its committed ids, padding included.
        position: the position of its anchor (the last committed token, not yet in the cache): its real tokens
            before it.
        new_tokens: tokens committed so far.
        finished_at: new-token count at which a stopping rule fired, or `None`.
        expected_accepted: per round, the budget policy's expected accepted draft tokens for this row (`None` when
            the policy predicts none).
        processors: the row's logits processors (`per_row.processors_for_rows`).
        grammar: the row's xgrammar state when its processors hold xgrammar's (`grammar.row_grammar`).
        criteria: the stopping criteria that judge this row alone; `batch_criteria`: this row's copies of the
            criteria that answer for the whole batch, with `batch_fired[k]` the new-token count at which copy k
            first fired (`None` while it has not).
    """

    def __init__(self, index: int, ids: torch.Tensor, position: int, depth_cap: DepthCap,
                 lookup: PromptLookup | None, keep_scores: bool, keep_logits: bool, keep_expected: bool = False,
                 processors: LogitsProcessorList | None = None, criteria: StoppingCriteriaList | None = None,
                 batch_criteria: StoppingCriteriaList | None = None, grammar: RowGrammar | None = None):
        self.index = index
        self.grammar = grammar
        self.processors = processors if processors is not None else LogitsProcessorList()
        self.criteria = criteria if criteria is not None else StoppingCriteriaList()
        self.batch_criteria = batch_criteria if batch_criteria is not None else StoppingCriteriaList()
        self.batch_fired: list[int | None] = [None] * len(self.batch_criteria)
        self.ids = ids
        self.position = position
        self.depth_cap = depth_cap
        self.lookup = lookup
        self.keep_scores = keep_scores
        self.keep_logits = keep_logits
        self.new_tokens = 0
        self.finished_at: int | None = None
        self.scores: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.accepted_lengths: list[int] = []
        self.tree_sizes: list[int] = []
        self.lookup_lengths: list[int] | None = [] if lookup is not None else None
        self.expected_accepted: list[float] | None = [] if keep_expected else None

    @property
    def anchor(self) -> int:
        """The last committed token: the root of the next tree."""
        return self.last_tokens[-1]

    def commit(self, walk: TreeWalk, stop: bool = True) -> int:
        """Append the walk's tokens up to the first one at which plain decoding would stop; returns how many.

        With `stop=False` (a finished row of a batch whose rows keep decoding, see `BatchStopping`) every token is
        kept and no rule is checked. Batch-level criteria are told every kept token either way.
        """
        if self.keep_scores:
            self.scores.extend(walk.scores)
        if stop:
            kept, finished = tokens_before_stop(
                walk.tokens, self.ids, self.criteria, self.scores if self.keep_scores else None
            )
        else:
            kept, finished = len(walk.tokens), False
        if self.keep_scores:
            del self.scores[len(self.scores) - len(walk.tokens) + kept :]
        if self.keep_logits:
            self.logits.extend(walk.logits[:kept])
        self.last_tokens = walk.tokens[:kept]
        self.extend(self.last_tokens)
        if self.grammar is not None:
            self.grammar.commit(self.last_tokens)
        if finished and self.finished_at is None:
            self.finished_at = self.new_tokens
        return kept

    @property
    def node_scorer(self) -> NodeScorer | None:
        """What scores every node of this row's tree at once, when its processors allow it (see `grammar.py`)."""
        return self.grammar.node_scores if self.grammar is not None and self.grammar.owns_walk else None

    def extend(self, tokens: list[int]) -> None:
        """Append committed tokens, telling the batch-level criteria after each one, as plain decoding's steps
        would."""
        for token in tokens:
            self.ids = torch.cat([self.ids, self.ids.new_tensor([[token]])], dim=1)
            self.new_tokens += 1
            for k, criterion in enumerate(self.batch_criteria):
                if self.batch_fired[k] is None and bool(torch.as_tensor(criterion(self.ids, None)).all()):
                    self.batch_fired[k] = self.new_tokens

    def record_round(self, tree: DraftTree, committed: int, lookup_accepted: int | None,
                     expected: float | None = None) -> None:
        self.accepted_lengths.append(committed)
        self.tree_sizes.append(len(tree))
        if self.lookup_lengths is not None:
            self.lookup_lengths.append(lookup_accepted or 0)
        if self.expected_accepted is not None:
            self.expected_accepted.append(expected)


class BatchStopping:
    """When rows stop, as plain batched decoding stops them.

    Plain decoding runs every row until all are finished. With an EOS criterion, a finished row is padded with
    `pad_token_id` from then on; without one, a row that a stopping rule finished keeps receiving real tokens until
    the last row finishes. So here a row leaves the batch once finished when there is an EOS criterion; otherwise
    every row decodes until all rows have finished, and all are cut to the longest finish.

    A batch-level criterion (`per_row.is_batch_level`) finishes every row at once, at the step where its copies
    have fired in every row: `batch_stop` once known. A row that finished (and left) before that is still asked,
    on its padded continuation, exactly as plain decoding keeps asking it.
    """

    def __init__(self, stopping_criteria: StoppingCriteriaList, batch_size: int, rows: list[DecodingRow],
                 max_new_tokens: int, pad_token_id: int):
        self.pads_finished_rows = batch_size == 1 or any(
            hasattr(criterion, "eos_token_id") for criterion in stopping_criteria
        )
        self.rows = rows
        self.max_new_tokens = max_new_tokens
        self.pad_token_id = pad_token_id

    @property
    def batch_stop(self) -> int | None:
        """The new-token count at which a batch-level criterion stops every row, once every row's copy fired."""
        stops = []
        for k in range(len(self.rows[0].batch_criteria) if self.rows else 0):
            fired = [row.batch_fired[k] for row in self.rows]
            if all(step is not None for step in fired):
                stops.append(max(fired))
        return min(stops) if stops else None

    def finish(self, row: DecodingRow) -> int | None:
        """The new-token count at which `row` stops taking tokens of its own (`None`: not known yet)."""
        stop = self.batch_stop
        if row.finished_at is None:
            return stop
        return row.finished_at if stop is None else min(row.finished_at, stop)

    def is_done(self, row: DecodingRow, rows: list[DecodingRow]) -> bool:
        """Whether `row` needs no more tokens."""
        if self.pads_finished_rows:
            stop = self.batch_stop
            if stop is not None and row.new_tokens >= stop:
                return True
            if row.finished_at is None:
                return False
            if row.batch_criteria and stop is None:
                self._continue_with_padding(row)
            return True
        finishes = [self.finish(other) for other in self.rows]
        if any(step is None for step in finishes):
            return False
        return row.new_tokens >= max(finishes)

    def checks_rules(self, row: DecodingRow) -> bool:
        """Whether stopping rules still apply to `row` (not once it finished in a batch that keeps it decoding)."""
        return row.finished_at is None

    def _continue_with_padding(self, row: DecodingRow) -> None:
        """Ask a leaving row's batch-level criteria about the padding plain decoding would append to it, until
        each fires or the length limit ends the batch."""
        if all(step is not None for step in row.batch_fired):
            return
        ids, count = row.ids, row.new_tokens
        while count < self.max_new_tokens and any(step is None for step in row.batch_fired):
            ids = torch.cat([ids, ids.new_full((1, 1), self.pad_token_id)], dim=1)
            count += 1
            for k, criterion in enumerate(row.batch_criteria):
                if row.batch_fired[k] is None and bool(torch.as_tensor(criterion(ids, None)).all()):
                    row.batch_fired[k] = count


def batch_sequences(rows: list[DecodingRow], prompt_length: int, generation_config: GenerationConfig,
                    stopping: BatchStopping) -> torch.LongTensor:
    """`(B, L + T)` ids in the caller's row order, cut or padded as plain batched decoding leaves them."""
    rows = sorted(rows, key=lambda row: row.index)
    if not stopping.pads_finished_rows:
        total = max(stopping.finish(row) for row in rows)
        return torch.cat([row.ids[:, : prompt_length + total] for row in rows], dim=0)
    stop = stopping.batch_stop
    if stop is not None:
        rows_ids = [row.ids[:, : prompt_length + stop] for row in rows]
    else:
        rows_ids = [row.ids for row in rows]
    total = max(ids.shape[1] for ids in rows_ids)
    pad = generation_config._pad_token_tensor
    pad_token = int(pad.flatten()[0]) if pad is not None else 0
    padded = []
    for ids in rows_ids:
        missing = total - ids.shape[1]
        padded.append(torch.cat([ids, ids.new_full((1, missing), pad_token)], dim=1) if missing else ids)
    return torch.cat(padded, dim=0)


__all__ = ["BatchStopping", "DecodingRow", "DepthCap", "batch_sequences"]
