"""Sampling through the tree must give exactly plain sampling's distribution, for every logits processor.

A 16-token target makes the joint distribution of the first three sampled tokens enumerable: its exact value
comes from the target's own processed scores at every prefix, and both the tree path and plain sampling are
checked against it with a chi-square goodness-of-fit test.
"""

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare
from transformers import Qwen3Config, Qwen3ForCausalLM

import jetspec_hf
from tiny_models import tiny_head

NEW_TOKENS = 3
RUNS = 1000
# Chance that a correct implementation fails one check, for a given seed; the test is seeded, so a failure
# means the distributions differ (or the seed is unlucky at this rate).
SIGNIFICANCE = 1e-3
PROMPT = torch.tensor([[5, 7, 9, 5]])

SETTINGS = {
    "temperature-1.0": dict(temperature=1.0, top_k=0),
    "temperature-0.7-top-k-5": dict(temperature=0.7, top_k=5),
    "top-p-0.8": dict(top_p=0.8, top_k=0),
    "repetition-penalty-1.5": dict(repetition_penalty=1.5, top_k=0),
}


def sixteen_token_target():
    """An enabled 16-token target, seeded: its first three tokens' distribution can be enumerated exactly."""
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=True,
        # No special ids: a generated 0 must not be mistaken for padding when a prefix is fed back as a prompt.
        eos_token_id=None, pad_token_id=None, bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config).eval()
    # Moderately peaked distributions: most of the mass on a few dozen 3-token sequences, so the test has power.
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return jetspec_hf.enable(model)


@pytest.fixture(scope="module")
def target():
    return sixteen_token_target()


@pytest.fixture(scope="module")
def heads(target):
    head = tiny_head(target, target_layer_ids=[0, 1], block_size=4)
    return {
        # Every depth-1 token and 15 of 16 depth-2 tokens under each are in the tree (241 nodes, within the largest
        # budget accepted): almost every sample is accepted and the walk goes deep.
        "complete-tree": dict(assistant_model=head, tree_budget=1 + 16 + 16 * 14, tree_width=16),
        # A random head with a tiny tree: most samples fall outside it and become corrections.
        "random-head-small-tree": dict(assistant_model=head, tree_budget=4, tree_width=2),
    }


# The published reference's full fan-out rule, and a node-level tree with a prompt-lookup branch.
OTHER_TREE_KINDS = {
    "fanout-tree": dict(tree_budget=6, tree_width=3, tree_expansion="fanout"),
    "hybrid-tree": dict(tree_budget=5, prompt_lookup_num_tokens=3),
}


def exact_distribution(target, settings) -> dict[tuple[int, ...], float]:
    """P(first three tokens) from the target's processed scores at every prefix (plain generate's processors)."""
    probabilities = {(): 1.0}
    for _ in range(NEW_TOKENS):
        extended = {}
        for path, path_probability in probabilities.items():
            prefix = torch.cat([PROMPT, torch.tensor([path], dtype=torch.long).view(1, -1)], dim=1)
            scores = target.generate(
                prefix, do_sample=True, max_new_tokens=1, return_dict_in_generate=True, output_scores=True,
                **settings,
            ).scores[0]
            next_probabilities = torch.softmax(scores[0].double(), dim=-1)
            for token, probability in enumerate(next_probabilities.tolist()):
                if probability > 0:
                    extended[path + (token,)] = path_probability * probability
        probabilities = extended
    return probabilities


def sample_counts(target, settings, runs, batch_size=1, **tree_kwargs) -> Counter:
    """Outcomes of `runs` samples, drawn `batch_size` rows (the same prompt) per call."""
    counts = Counter()
    for _ in range(runs // batch_size):
        output = target.generate(
            PROMPT.expand(batch_size, -1), do_sample=True, max_new_tokens=NEW_TOKENS, **settings, **tree_kwargs
        )
        for row in output[:, PROMPT.shape[1] :].tolist():
            counts[tuple(row)] += 1
    return counts


def chi_square_p_value(counts: Counter, exact: dict, runs: int) -> float:
    """Goodness of fit; outcomes expected fewer than 5 times are pooled into one bin."""
    observed, expected = [], []
    pooled_observed, pooled_expected = 0, 0.0
    for outcome, probability in exact.items():
        if probability * runs >= 5:
            observed.append(counts.get(outcome, 0))
            expected.append(probability * runs)
        else:
            pooled_observed += counts.get(outcome, 0)
            pooled_expected += probability * runs
    unexpected = sum(count for outcome, count in counts.items() if outcome not in exact)
    assert unexpected == 0, "sampled a sequence that has probability zero"
    observed.append(pooled_observed)
    expected.append(pooled_expected)
    # Renormalise against float rounding so both sums are exactly `runs`.
    scale = sum(observed) / sum(expected)
    return chisquare(observed, [value * scale for value in expected]).pvalue


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_tree_sampling_matches_exact_and_plain_distribution(target, heads, setting):
    settings = SETTINGS[setting]
    exact = exact_distribution(target, settings)
    assert sum(exact.values()) == pytest.approx(1.0)
    assert max(exact.values()) < 0.7, "the test target should not be nearly deterministic"
    torch.manual_seed(1)
    plain = sample_counts(target, settings, RUNS)
    assert chi_square_p_value(plain, exact, RUNS) > SIGNIFICANCE
    for head_name, tree_kwargs in heads.items():
        torch.manual_seed(2)
        tree = sample_counts(target, settings, RUNS, **tree_kwargs)
        p_value = chi_square_p_value(tree, exact, RUNS)
        assert p_value > SIGNIFICANCE, f"{head_name}: tree sampling departs from the target's distribution"


def test_auto_budget_sampling_matches_exact_distribution(target, heads):
    # The auto policy's trees change size from round to round (and it verifies the root alone when drafts do not
    # pay); each round is still an exact draw.
    settings = SETTINGS["temperature-0.7-top-k-5"]
    exact = exact_distribution(target, settings)
    torch.manual_seed(3)
    tree_kwargs = dict(heads["complete-tree"], tree_budget="auto")
    counts = sample_counts(target, settings, RUNS, **tree_kwargs)
    assert chi_square_p_value(counts, exact, RUNS) > SIGNIFICANCE


def test_draft_window_sampling_matches_exact_distribution(target, heads):
    # A window shorter than the prompt changes every draft; each round is still an exact draw.
    settings = SETTINGS["temperature-1.0"]
    exact = exact_distribution(target, settings)
    torch.manual_seed(4)
    tree_kwargs = dict(heads["complete-tree"], draft_window=2)
    counts = sample_counts(target, settings, RUNS, **tree_kwargs)
    assert chi_square_p_value(counts, exact, RUNS) > SIGNIFICANCE


def test_complete_tree_accepts_deeply_while_sampling(target, heads):
    output = target.generate(
        PROMPT, do_sample=True, max_new_tokens=NEW_TOKENS, return_dict_in_generate=True, **heads["complete-tree"]
    )
    # The first token is sampled from the prefill's logits; the one round left commits the rest at once.
    assert output.accepted_lengths == [NEW_TOKENS - 1]


def test_seeded_sampling_is_reproducible(target, heads):
    for tree_kwargs in heads.values():
        runs = []
        for _ in range(2):
            torch.manual_seed(1234)
            runs.append(target.generate(PROMPT, do_sample=True, max_new_tokens=12, temperature=0.9, **tree_kwargs))
        assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("setting", ["temperature-1.0", "repetition-penalty-1.5"])
def test_batched_tree_sampling_of_every_tree_kind_matches_the_exact_distribution(target, heads, setting):
    # Four rows per call, each sampled through its own tree walk: every row must follow the target's distribution.
    settings = SETTINGS[setting]
    exact = exact_distribution(target, settings)
    head = heads["complete-tree"]["assistant_model"]
    kinds = {**heads, **{name: dict(assistant_model=head, **tree) for name, tree in OTHER_TREE_KINDS.items()}}
    for kind, tree_kwargs in kinds.items():
        torch.manual_seed(5)
        counts = sample_counts(target, settings, RUNS, batch_size=4, **tree_kwargs)
        assert sum(counts.values()) == RUNS
        assert chi_square_p_value(counts, exact, RUNS) > SIGNIFICANCE, kind
