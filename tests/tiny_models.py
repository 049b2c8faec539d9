"""Tiny random Qwen3 targets and JetSpec heads, built in memory for the tests (seeded, fp32, CPU)."""

from __future__ import annotations

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

import jetspec_hf
from jetspec_hf import JetSpecConfig, JetSpecDraftModel

VOCAB_SIZE = 96
HIDDEN_SIZE = 64
EOS_TOKEN_ID = 1
MASK_TOKEN_ID = 2


# The decoder families besides Qwen3 that the tree path supports, built at the same tiny shapes.
ARCHITECTURES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def tiny_target(attn_implementation: str = "sdpa", moe: bool = False, seed: int = 0, architecture: str = "qwen3",
                **overrides):
    """A 4-layer causal LM with random weights: Qwen3 (or Qwen3-MoE), or one of `ARCHITECTURES`."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=0,
        bos_token_id=EOS_TOKEN_ID,
        tie_word_embeddings=True,
    )
    if architecture != "qwen3":
        config_class, model_class = ARCHITECTURES[architecture]
        model = model_class(config_class(**common, intermediate_size=128, **overrides))
    elif moe:
        config = Qwen3MoeConfig(
            **common, intermediate_size=128, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
            decoder_sparse_step=1, **overrides,
        )
        model = Qwen3MoeForCausalLM(config)
    else:
        config = Qwen3Config(**common, intermediate_size=128, **overrides)
        model = Qwen3ForCausalLM(config)
    # Larger weights than the default init make the random model's next-token choices decisive (no near-ties).
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    model.set_attn_implementation(attn_implementation)
    return model.eval()


def tiny_head(
    target, causal: bool = True, seed: int = 1, block_size: int = 8, target_layer_ids=None, **overrides
) -> JetSpecDraftModel:
    """A random JetSpec (causal) or DFlash (bidirectional) head that fits `target`."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=target.config.vocab_size,
        hidden_size=target.config.hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=512,
        block_size=block_size,
        num_target_layers=target.config.num_hidden_layers,
        dflash_config={"mask_token_id": MASK_TOKEN_ID, "causal_head": causal, "target_layer_ids": target_layer_ids},
    )
    config = JetSpecConfig(**{**settings, **overrides})
    return JetSpecDraftModel(config).eval()


def enabled_pair(**head_overrides):
    """A tiny enabled target and a tiny head that fits it."""
    target = jetspec_hf.enable(tiny_target())
    return target, tiny_head(target, **head_overrides)


def refuse_forwards(monkeypatch, target) -> None:
    """Fail the test if `target` runs any forward (for checks that must happen before any work)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass ran before the input was checked")

    monkeypatch.setattr(target.model, "forward", refuse)


def tiny_tokenizer():
    """A character-level tokenizer over the tiny vocabulary: ids 0-2 are special, id i >= 3 is `chr(33 + i)`.

    One printable character per token makes stop strings easy to place at any point of a generation.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": EOS_TOKEN_ID, "<mask>": MASK_TOKEN_ID}
    vocab.update({chr(33 + i): i for i in range(3, VOCAB_SIZE)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", mask_token="<mask>")


def random_prompt(seed: int, length: int) -> torch.Tensor:
    """A `(1, length)` prompt of ordinary (non-special) token ids."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB_SIZE, (1, length), generator=generator)
