"""Logits processors and stopping criteria as one row of a batch sees them.

Rows of a batch accept different numbers of tokens per round, so the loop walks each row on its own and calls its
processors and stopping criteria with that row's `(1, L)` ids. That gives plain batched decoding's result only
for objects that treat every row alike and keep no state per row, or whose per-row state can be rebuilt for one
row. So for a batch every object is sorted before any work:

* **shared**: transformers' own processors and criteria that read nothing but the row they are given (each one
  checked: `ROW_SAFE_PROCESSORS`, `ROW_SAFE_CRITERIA`), and classes a user marks with `mark_row_safe`;
* **rebuilt per row**: the repetition penalty (its per-row prompt length), xgrammar's HF processor (one matcher per
  row, sized on its first call), outlines' processors (`reset()` on a copy), transformers-cfg's grammar processor
  (one parsing state per row);
* **batch-level criteria**: lm-evaluation-harness' `MultiTokenEOSCriteria` answers for the whole batch (true once
  every row has seen its stop sequence): each row gets its own copy, and `BatchStopping` stops the batch when all
  copies have fired, as plain batched decoding does;
* anything else is **refused** with an error naming the object and the ways out (batch size 1, `mark_row_safe`).

Third-party classes are recognised by name (module and class), so none of those libraries is imported here.
"""

from __future__ import annotations

import copy

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.generation import logits_process as lp
from transformers.generation import stopping_criteria as sc

# Each reads only the `(1, L)` ids and `(1, V)` scores it is given (and constants shared by every row: the prompt
# width, the length limits, token lists), so a row alone gets what it gets as a row of plain batched decoding.
ROW_SAFE_PROCESSORS = (
    lp.TemperatureLogitsWarper, lp.TopKLogitsWarper, lp.TopPLogitsWarper, lp.MinPLogitsWarper, lp.TopHLogitsWarper,
    lp.TypicalLogitsWarper, lp.EpsilonLogitsWarper, lp.EtaLogitsWarper, lp.MinLengthLogitsProcessor,
    lp.MinNewTokensLengthLogitsProcessor, lp.NoRepeatNGramLogitsProcessor, lp.NoBadWordsLogitsProcessor,
    lp.SequenceBiasLogitsProcessor, lp.ForcedBOSTokenLogitsProcessor, lp.ForcedEOSTokenLogitsProcessor,
    lp.InfNanRemoveLogitsProcessor, lp.ExponentialDecayLengthPenalty, lp.LogitNormalization,
    lp.SuppressTokensLogitsProcessor, lp.SuppressTokensAtBeginLogitsProcessor, lp.WatermarkLogitsProcessor,
)
ROW_SAFE_CRITERIA = (sc.MaxLengthCriteria, sc.MaxTimeCriteria, sc.EosTokenCriteria, sc.StopStringCriteria)

_marked_row_safe: set[type] = set()

XGRAMMAR_PROCESSOR = "xgrammar.contrib.hf.LogitsProcessor"
OUTLINES_PROCESSOR_BASE = "outlines.processors.base_logits_processor.OutlinesLogitsProcessor"
TRANSFORMERS_CFG_PROCESSOR = "transformers_cfg.generation.logits_process.GrammarConstrainedLogitsProcessor"
LM_EVAL_STOP_SEQUENCE = "lm_eval.models.utils_hf.MultiTokenEOSCriteria"


class RowSplitError(ValueError):
    """A processor or stopping criterion of a batched call cannot be run per row."""


def mark_row_safe(cls: type) -> type:
    """Declare that instances of `cls` (a logits processor or stopping criterion) treat every row of a batch alike
    and keep no state per row, so that batched tree decoding may call them with one row's ids at a time.
    Returns `cls`, so it also works as a class decorator."""
    _marked_row_safe.add(cls)
    return cls


def class_names(obj) -> set[str]:
    """The qualified names of `obj`'s class and its bases (how third-party classes are recognised here)."""
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(obj).__mro__}


def _describe(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _is_row_safe(obj, known: tuple) -> bool:
    return type(obj) in known or any(cls in _marked_row_safe for cls in type(obj).__mro__)


def _refusal(kind: str, obj, batch_size: int, why: str) -> RowSplitError:
    return RowSplitError(
        f"The {kind} {_describe(obj)} cannot be run per row of a batch of {batch_size} with a JetSpec head: {why} "
        "Rows of a batch advance by different numbers of tokens per round, so each is walked on its own. "
        "Generate one sequence per call (batch size 1), where every processor and criterion runs as in plain "
        "decoding; or, if it treats every row alike and keeps no state per row, declare it with "
        "`jetspec_hf.mark_row_safe(YourClass)`."
    )


def _processor_for_row(processor, row: int, batch_size: int):
    names = class_names(processor)
    if _is_row_safe(processor, ROW_SAFE_PROCESSORS):
        return processor
    if isinstance(processor, lp.RepetitionPenaltyLogitsProcessor):
        ignore = getattr(processor, "prompt_ignore_length", None)
        if isinstance(ignore, torch.Tensor):
            processor = copy.copy(processor)
            processor.prompt_ignore_length = ignore[row : row + 1]
        return processor
    if XGRAMMAR_PROCESSOR in names:
        if processor.matchers:
            raise _refusal("logits processor", processor, batch_size,
                           "it was used before (xgrammar's processors serve one generate call each).")
        grammars = processor.compiled_grammars
        if len(grammars) not in (1, batch_size):
            raise _refusal("logits processor", processor, batch_size,
                           f"it holds {len(grammars)} grammars for {batch_size} rows.")
        return type(processor)(grammars[row] if len(grammars) == batch_size else grammars[0])
    if OUTLINES_PROCESSOR_BASE in names:
        fresh = copy.copy(processor)
        fresh.reset()  # its per-row guides are sized on the first call, so this copy sizes them for one row
        return fresh
    if TRANSFORMERS_CFG_PROCESSOR in names:
        if processor.batch_parsing_states is not None:
            raise _refusal("logits processor", processor, batch_size,
                           "it was used before (its parsing states belong to that call's rows).")
        return copy.copy(processor)  # parsing states are created on the first call, one per row of that call
    raise _refusal("logits processor", processor, batch_size,
                   "it is not known to treat every row alike, and it may keep state per row.")


def processors_for_rows(logits_processor: LogitsProcessorList, batch_size: int) -> list[LogitsProcessorList]:
    """Each row's processors (see the module doc); raises `RowSplitError` before any work when one cannot be run
    per row. A single sequence keeps the list as it is."""
    if batch_size == 1:
        return [logits_processor]
    per_row = [LogitsProcessorList() for _ in range(batch_size)]
    for processor in logits_processor:
        for row in range(batch_size):
            per_row[row].append(_processor_for_row(processor, row, batch_size))
    return per_row


def is_batch_level(criterion) -> bool:
    """Whether a stopping criterion answers for the whole batch rather than per row (see the module doc)."""
    return LM_EVAL_STOP_SEQUENCE in class_names(criterion)


def criteria_for_rows(stopping_criteria: StoppingCriteriaList,
                      batch_size: int) -> list[tuple[StoppingCriteriaList, StoppingCriteriaList]]:
    """Each row's `(per-row criteria, batch-level criteria)`; raises `RowSplitError` before any work for a
    criterion that can be neither. A single sequence keeps every criterion as a per-row one."""
    if batch_size == 1:
        return [(stopping_criteria, StoppingCriteriaList())]
    rows = [(StoppingCriteriaList(), StoppingCriteriaList()) for _ in range(batch_size)]
    for criterion in stopping_criteria:
        if _is_row_safe(criterion, ROW_SAFE_CRITERIA):
            for own, _ in rows:
                own.append(criterion)
        elif is_batch_level(criterion):
            for _, batch_level in rows:
                copied = copy.copy(criterion)
                copied.done_tracker = [False]  # its state is one flag per row: this copy holds one row's
                batch_level.append(copied)
        else:
            raise _refusal("stopping criterion", criterion, batch_size,
                           "it is not known to judge every row alike, and it may keep state per row.")
    return rows


__all__ = [
    "ROW_SAFE_CRITERIA",
    "ROW_SAFE_PROCESSORS",
    "RowSplitError",
    "criteria_for_rows",
    "is_batch_level",
    "mark_row_safe",
    "processors_for_rows",
]
