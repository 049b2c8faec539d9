"""Structured-output clients that users pass to `generate` (xgrammar, outlines, transformers-cfg), with the real
libraries: one sequence and batches give plain decoding's tokens with a fresh processor per call, because the walk
shows a processor one committed token at a time along the accepted path, and a batch gives each row its own
rebuilt processor (`per_row.py`). Each library is a test extra (`pip install "jetspec_hf[clients]"`); a missing
one skips its tests with the reason."""

import pytest
import torch
from transformers import LogitsProcessorList

from generation.test_per_row import batch
from tiny_models import VOCAB_SIZE, tiny_tokenizer

# The tiny tokenizer has one printable character per token (no quote or space), so grammars are regular.
REGEX = r"[a-f]{2,6}(X|Y)[0-9]{1,4}"


def xgrammar_processor():
    xgr = pytest.importorskip("xgrammar", reason="xgrammar is not installed (pip install 'jetspec_hf[clients]')")
    info = xgr.TokenizerInfo.from_huggingface(tiny_tokenizer(), vocab_size=VOCAB_SIZE)
    compiled = xgr.GrammarCompiler(info).compile_regex(REGEX)
    return lambda: xgr.contrib.hf.LogitsProcessor(compiled)


def outlines_processor(backend, target):
    outlines = pytest.importorskip("outlines", reason="outlines is not installed (pip install 'jetspec_hf[clients]')")
    from outlines.backends import get_regex_logits_processor

    model = outlines.from_transformers(target, tiny_tokenizer())
    return lambda: get_regex_logits_processor(backend, model, REGEX)


def transformers_cfg_processor():
    pytest.importorskip("transformers_cfg", reason="transformers-cfg is not installed "
                                                   "(pip install 'jetspec_hf[clients]')")
    from transformers_cfg.generation.logits_process import GrammarConstrainedLogitsProcessor
    from transformers_cfg.grammar_utils import IncrementalGrammarConstraint

    try:
        constraint = IncrementalGrammarConstraint('root ::= [a-f]+ "X" [0-9]+', "root", tiny_tokenizer())
    except NotImplementedError as error:
        pytest.skip(f"transformers-cfg cannot read transformers 5 tokenizers here: {error}")
    return lambda: GrammarConstrainedLogitsProcessor(constraint)


@pytest.fixture(params=["xgrammar", "outlines-core", "outlines-xgrammar", "transformers-cfg"])
def make_processor(request, pair):
    target, _ = pair
    if request.param == "xgrammar":
        return xgrammar_processor()
    if request.param == "transformers-cfg":
        return transformers_cfg_processor()
    return outlines_processor(request.param.split("-", 1)[1].replace("core", "outlines_core"), target)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("budget", [4, 16])
def test_grammar_constrained_output_equals_plain(pair, make_processor, rows, budget):
    target, head = pair
    for seed in (5, 11):
        ids, mask = batch(seed=seed, rows=rows)
        settings = dict(attention_mask=mask, do_sample=False, max_new_tokens=14, pad_token_id=0)
        plain = target.generate(ids, logits_processor=LogitsProcessorList([make_processor()]), **settings)
        got = target.generate(ids, logits_processor=LogitsProcessorList([make_processor()]), assistant_model=head,
                              tree_budget=budget, **settings)
        assert torch.equal(got, plain)
        assert "X" in tiny_tokenizer().decode(plain[0]) or "Y" in tiny_tokenizer().decode(plain[0])


def test_a_used_xgrammar_processor_is_refused_in_a_batch(pair):
    target, head = pair
    processor = xgrammar_processor()()
    ids, mask = batch(seed=5, rows=2)
    target.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=3, logits_processor=[processor])
    with pytest.raises(ValueError, match="used before"):
        target.generate(ids, attention_mask=mask, max_new_tokens=3, assistant_model=head, logits_processor=[processor])
