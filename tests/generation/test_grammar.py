"""Grammar-aware trees (`generation/grammar.py`) with the real xgrammar (a `clients` test extra): every drafted node
is a token the grammar allows, every node's mask is plain decoding's at its prefix, and the output equals plain
decoding under the same grammar, greedy token for token and sampling in distribution."""

import json
import math
from collections import Counter

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.generation import logits_process as lp

from bundled import bundled_head, bundled_target
from generation.test_lossless_sampling import PROMPT, chi_square_p_value, sixteen_token_target
from generation.test_per_row import batch
from jetspec_hf.generation.grammar import RowGrammar, allows, row_grammar
from jetspec_hf.generation.tree import build_tree
from tiny_models import VOCAB_SIZE, tiny_head, tiny_tokenizer

xgr = pytest.importorskip("xgrammar", reason="xgrammar is not installed (pip install 'jetspec_hf[clients]')")

TINY_REGEX = r"[a-f]{2,6}(X|Y)[0-9]{1,4}"
# Package metadata as compact JSON: keys and punctuation are forced, the values are the model's.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "version": {"type": "string", "pattern": "[0-9]+\\.[0-9]+\\.[0-9]+"},
        "description": {"type": "string", "maxLength": 60},
        "license": {"type": "string", "enum": ["MIT", "BSD", "PSF"]},
    },
    "required": ["name", "version", "description", "license"],
}
BUNDLED_PROMPTS = ["import json\n\nCONFIG = ", "def package_info():\n    \"\"\"Return the metadata.\"\"\"\n    return ",
                   "# settings\nDEFAULTS = "]


def tiny_grammar():
    info = xgr.TokenizerInfo.from_huggingface(tiny_tokenizer(), vocab_size=VOCAB_SIZE)
    return xgr.GrammarCompiler(info).compile_regex(TINY_REGEX)


@pytest.fixture(scope="module")
def bundled_schema():
    target, tokenizer = bundled_target()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=target.config.vocab_size)
    return xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)


def fresh(compiled):
    return LogitsProcessorList([xgr.contrib.hf.LogitsProcessor(compiled)])


def fresh_mask(compiled, tokens):
    """The bitmask a fresh matcher gives after `tokens`."""
    matcher = xgr.GrammarMatcher(compiled)
    for token in tokens:
        assert matcher.accept_token(token)
    mask = xgr.allocate_token_bitmask(1, compiled.tokenizer_info.vocab_size)
    matcher.fill_next_token_bitmask(mask, 0)
    return mask[0]


def path_tokens(tree, node):
    tokens = []
    while node > 0:
        tokens.append(tree.tokens[node])
        node = tree.parents[node]
    return tokens[::-1]


@pytest.mark.parametrize("budget", [4, 16])
def test_every_drafted_node_is_allowed_and_gets_plain_decodings_mask(budget):
    compiled = tiny_grammar()
    grammar = RowGrammar(compiled, walk_processors=None)
    committed = [ord(c) - 33 for c in "abc"]  # the tiny tokenizer's ids of "a", "b", "c"
    grammar.commit(committed)
    logits = torch.randn(6, VOCAB_SIZE, generator=torch.Generator().manual_seed(budget)) * 3
    tree = build_tree(0, grammar.ranking(logits, width=4), budget, width=4)
    assert len(tree) == budget
    masks = grammar.tree_masks(tree)
    for node in range(len(tree)):
        prefix = committed + path_tokens(tree, node)
        assert torch.equal(masks[node], fresh_mask(compiled, prefix)), node
        if node > 0:
            assert allows(masks[tree.parents[node]], tree.tokens[node])
    # The head's probability is renormalised over the allowed children: each node's ranked children sum to <= 1.
    ranking = grammar.ranking(logits, width=VOCAB_SIZE)
    tree = build_tree(0, ranking, 2, width=VOCAB_SIZE)
    log_probs, _ = ranking.ranked_children(tree, 0)
    assert sum(torch.tensor(log_probs).exp()) == pytest.approx(1.0, abs=1e-5)


def test_a_forced_token_costs_the_tree_nothing():
    info = xgr.TokenizerInfo.from_huggingface(tiny_tokenizer(), vocab_size=VOCAB_SIZE)
    grammar = RowGrammar(xgr.GrammarCompiler(info).compile_regex(r"a(bc|d)[0-9]"), walk_processors=None)
    grammar.commit([ord("a") - 33])
    logits = torch.randn(4, VOCAB_SIZE, generator=torch.Generator().manual_seed(0))
    logits[0, ord("b") - 33] = logits[0, ord("d") - 33] = 0.0
    tree = build_tree(0, grammar.ranking(logits, width=4), 4, width=4)
    # "b" and "d" share depth 1 evenly; "c" is forced after "b": its path probability is that of "b" alone.
    by_path = {tuple(path_tokens(tree, node)): tree.scores[node] for node in range(len(tree))}
    b, c, d = (ord(character) - 33 for character in "bcd")
    assert by_path[(b,)] == pytest.approx(math.log(0.5), abs=1e-6)
    assert by_path[(d,)] == pytest.approx(math.log(0.5), abs=1e-6)
    assert by_path[(b, c)] == pytest.approx(by_path[(b,)], abs=1e-6)


def test_the_grammar_state_follows_the_processor_step_by_step():
    # Driven with the same committed tokens, RowGrammar's next mask gives the processor's scores at every step.
    compiled = tiny_grammar()
    processor = xgr.contrib.hf.LogitsProcessor(compiled)
    grammar = row_grammar(LogitsProcessorList([processor]))
    ids = torch.tensor([[5, 6]])
    for character in "cafeX12":
        logits = torch.randn(1, VOCAB_SIZE)
        expected = processor(ids, logits.clone())
        from jetspec_hf.generation.tree import DraftTree

        got = grammar.node_scores(logits, DraftTree.root_only(int(ids[0, -1])), ids)
        assert torch.equal(got, expected)
        token = ord(character) - 33
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        grammar.commit([token])


def test_rows_that_keep_the_per_token_path():
    compiled = tiny_grammar()
    # A processor that reads the prefix (repetition penalty): the walk calls the processors node by node.
    mixed = row_grammar(LogitsProcessorList([xgr.contrib.hf.LogitsProcessor(compiled),
                                             lp.RepetitionPenaltyLogitsProcessor(1.3)]))
    assert mixed is not None and not mixed.owns_walk
    # Prefix-free warpers keep the vectorised walk.
    warped = row_grammar(LogitsProcessorList([xgr.contrib.hf.LogitsProcessor(compiled),
                                              lp.TemperatureLogitsWarper(0.7), lp.TopKLogitsWarper(5)]))
    assert warped.owns_walk
    used = xgr.contrib.hf.LogitsProcessor(compiled)
    used(torch.tensor([[5]]), torch.zeros(1, VOCAB_SIZE))
    assert row_grammar(LogitsProcessorList([used])) is None  # plain decoding would continue from its state
    assert row_grammar(LogitsProcessorList([lp.TemperatureLogitsWarper(0.7)])) is None


@pytest.mark.parametrize("budget", [1, 4, 16, "auto"])
def test_bundled_pair_under_a_json_schema_equals_plain_and_accepts_deeply(bundled_schema, budget):
    target, tokenizer = bundled_target()
    head = bundled_head()
    accepted = []
    for prompt in BUNDLED_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        for max_new_tokens in (7, 90):
            settings = dict(do_sample=False, max_new_tokens=max_new_tokens)
            plain = target.generate(ids, logits_processor=fresh(bundled_schema), **settings)
            out = target.generate(ids, logits_processor=fresh(bundled_schema), assistant_model=head,
                                  tree_budget=budget, return_dict_in_generate=True, **settings)
            assert torch.equal(out.sequences, plain), (prompt, max_new_tokens)
            accepted.extend(out.accepted_lengths)
        assert json.loads(tokenizer.decode(plain[0, ids.shape[1]:], skip_special_tokens=True))["license"] in (
            "MIT", "BSD", "PSF")
    if budget == 16:
        # Forced keys and punctuation are drafted deep: far more than one token per round.
        assert sum(accepted) / len(accepted) > 3.0


def test_scores_and_a_repetition_penalty_under_a_grammar_equal_plain(bundled_schema):
    target, tokenizer = bundled_target()
    ids = tokenizer(BUNDLED_PROMPTS[0], return_tensors="pt").input_ids
    for extra in (dict(output_scores=True), dict(repetition_penalty=1.2)):
        settings = dict(do_sample=False, max_new_tokens=40, return_dict_in_generate=True, **extra)
        plain = target.generate(ids, logits_processor=fresh(bundled_schema), **settings)
        out = target.generate(ids, logits_processor=fresh(bundled_schema), assistant_model=bundled_head(),
                              tree_budget=8, **settings)
        assert torch.equal(out.sequences, plain.sequences)
        if "output_scores" in extra:
            assert len(out.scores) == len(plain.scores)
            for got, expected in zip(out.scores, plain.scores):
                # The same tokens masked (-inf where the grammar forbids), the rest equal up to float rounding.
                assert torch.equal(torch.isinf(got), torch.isinf(expected))
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_batches_under_a_grammar_equal_plain_batched_decoding(pair):
    target, head = pair
    compiled = tiny_grammar()
    for seed in (3, 8):
        ids, mask = batch(seed=seed, rows=3)
        settings = dict(attention_mask=mask, do_sample=False, max_new_tokens=12, pad_token_id=0)
        plain = target.generate(ids, logits_processor=fresh(compiled), **settings)
        got = target.generate(ids, logits_processor=fresh(compiled), assistant_model=head, tree_budget=8,
                              **settings)
        assert torch.equal(got, plain)


# Sampling: a 16-token target whose vocabulary is 16 characters, so the distribution of the first three tokens
# under the grammar can be enumerated exactly.
SAMPLING_VOCAB = "abcdefghijklmnop"
SAMPLING_REGEX = r"[a-e]([f-h]|[a-c]{2})[a-p]*"
RUNS = 1000


@pytest.fixture(scope="module")
def sampling_setup():
    target = sixteen_token_target()
    info = xgr.TokenizerInfo(list(SAMPLING_VOCAB), vocab_type=xgr.VocabType.RAW, vocab_size=16, stop_token_ids=[15])
    compiled = xgr.GrammarCompiler(info).compile_regex(SAMPLING_REGEX)
    return target, tiny_head(target, target_layer_ids=[0, 1], block_size=4), compiled


def exact_distribution(target, compiled, temperature, top_k):
    """P(first three tokens): the raw logits at each prefix, masked by the grammar there, then the warpers in
    plain decoding's order (the user's processors first)."""
    warpers = LogitsProcessorList([lp.TemperatureLogitsWarper(temperature), lp.TopKLogitsWarper(top_k)])
    probabilities = {(): 1.0}
    for _ in range(3):
        extended = {}
        for path, path_probability in probabilities.items():
            prefix = torch.cat([PROMPT, torch.tensor([path], dtype=torch.long).view(1, -1)], dim=1)
            with torch.no_grad():
                scores = target(prefix).logits[:, -1].float()
            xgr.apply_token_bitmask_inplace(scores, fresh_mask(compiled, path)[None])
            scores = warpers(prefix, scores)
            for token, probability in enumerate(torch.softmax(scores[0].double(), dim=-1).tolist()):
                if probability > 0:
                    extended[path + (token,)] = path_probability * probability
        probabilities = extended
    return probabilities


@pytest.mark.parametrize("temperature,top_k", [(1.0, 16), (0.7, 5)])
def test_tree_sampling_under_a_grammar_matches_the_exact_distribution(sampling_setup, temperature, top_k):
    target, head, compiled = sampling_setup
    exact = exact_distribution(target, compiled, temperature, top_k)
    for tree_kwargs in (dict(tree_budget=1 + 16 + 16 * 6, tree_width=16), dict(tree_budget=4, tree_width=2)):
        torch.manual_seed(7)
        counts = Counter()
        for _ in range(RUNS):
            out = target.generate(PROMPT, do_sample=True, max_new_tokens=3, temperature=temperature, top_k=top_k,
                                  logits_processor=fresh(compiled), assistant_model=head, **tree_kwargs)
            counts[tuple(out[0, PROMPT.shape[1]:].tolist())] += 1
        assert chi_square_p_value(counts, exact, RUNS) > 1e-3, tree_kwargs
