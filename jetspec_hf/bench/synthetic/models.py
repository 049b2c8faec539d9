"""Random-weight target and head at real shapes, built in memory on the device: no download, no checkpoint.

The target is a `Qwen3ForCausalLM` with Qwen3-8B's shapes (or a tiny preset for the tests); the head is a
`JetSpecDraftModel` with the released 8B heads' shapes (5 layers, block size 16, 5 tapped target layers chosen as
the released format chooses them). Both are built directly on the device in the requested dtype, so an 8B target
never exists as an fp32 copy, on the host or anywhere else.

The weights are random but not arbitrary. A random transformer's greedy choices are near-ties, and in bf16 a tree
verify and a one-token forward round differently (docs/design.md §8): the tree path would part from the plain
reference after a few tokens, and an oracle that plants the reference in each tree could no longer force any τ. So
the residual stream is kept dominated by the token embedding (the layers' output projections are scaled down) and
the lm_head is the embedding table shifted by one row: the target's greedy next token is always "current + 1"
(mod vocab), by a margin of about sqrt(hidden_size) standard deviations of the other logits. Costs are those of any
model of these shapes: nothing here changes a kernel, a shape or the number of operations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from ...configuration_jetspec import JetSpecConfig
from ...generation.checks import check_head_fits_target
from ...modeling_jetspec import JetSpecDraftModel


@dataclass(frozen=True)
class SyntheticShapes:
    """Shapes of the synthetic target and head.

    Attributes:
        vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim, intermediate_size: the target's
            (the head shares hidden size, heads and MLP width, as the released heads do).
        max_position_embeddings, rope_theta, rms_norm_eps: the target's RoPE and norm settings.
        head_layers: the head's decoder layers; the released heads tap as many target layers as they have layers.
        block_size: the head's block (anchor + block_size - 1 drafted depths).
        mask_token_id: the head's mask token, an id of the target's vocabulary.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    head_layers: int
    block_size: int
    mask_token_id: int

    def describe(self) -> dict:
        return asdict(self)


SHAPES = {
    # Qwen/Qwen3-8B's config.json (transformers' Qwen3Config defaults are not the 8B values). The head: the released
    # 8B heads (5 layers, block size 16). 151669 is the first id past Qwen3's tokenizer, a padded row of the
    # embedding table, where an added `<|MASK|>` token lands.
    "8b": SyntheticShapes(
        vocab_size=151936, hidden_size=4096, num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128,
        intermediate_size=12288, max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        head_layers=5, block_size=16, mask_token_id=151669,
    ),
    # Same structure at toy sizes, for the tests on a CPU: 8 target layers so that 5 tapped layers are distinct.
    "tiny": SyntheticShapes(
        vocab_size=256, hidden_size=64, num_layers=8, num_heads=4, num_kv_heads=2, head_dim=16,
        intermediate_size=128, max_position_embeddings=4096, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        head_layers=5, block_size=16, mask_token_id=255,
    ),
}

# Scale of each layer's output projections (o_proj, down_proj), divided by sqrt(layers): the 2 x layers residual
# additions then sum to about a third of the embedding's norm, whatever the depth.
_RESIDUAL_BRANCH_SCALE = 0.25


def _decoder_fields(shapes: SyntheticShapes) -> dict:
    """The Qwen3 decoder fields target and head share (the head's layer count aside)."""
    return dict(
        vocab_size=shapes.vocab_size,
        hidden_size=shapes.hidden_size,
        num_attention_heads=shapes.num_heads,
        num_key_value_heads=shapes.num_kv_heads,
        head_dim=shapes.head_dim,
        intermediate_size=shapes.intermediate_size,
        max_position_embeddings=shapes.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": shapes.rope_theta},
        rms_norm_eps=shapes.rms_norm_eps,
    )


def target_config(shapes: SyntheticShapes) -> Qwen3Config:
    """The target's config. No BOS/EOS: the synthetic continuation never stops before `max_new_tokens`."""
    return Qwen3Config(
        **_decoder_fields(shapes),
        num_hidden_layers=shapes.num_layers,
        max_window_layers=shapes.num_layers,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def head_config(shapes: SyntheticShapes) -> JetSpecConfig:
    """The head's config in the released format's terms: tapped layers from `num_target_layers` by the released
    rule (`default_target_layer_ids`), causal block mask."""
    return JetSpecConfig(
        **_decoder_fields(shapes),
        num_hidden_layers=shapes.head_layers,
        block_size=shapes.block_size,
        num_target_layers=shapes.num_layers,
        dflash_config={"mask_token_id": shapes.mask_token_id, "causal_head": True},
    )


def _randomize(model: torch.nn.Module, num_layers: int, generator: torch.Generator) -> None:
    """Unit-scale random weights, in place on the model's device: inputs of every projection keep unit RMS
    (std 1/sqrt(fan_in)), the residual branches' outputs are scaled down, norms are ones."""
    branch_scale = _RESIDUAL_BRANCH_SCALE / math.sqrt(num_layers)
    for name, parameter in model.named_parameters():
        if parameter.dim() == 1:
            parameter.fill_(1.0)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            parameter.normal_(0.0, branch_scale / math.sqrt(parameter.shape[1]), generator=generator)
        else:
            parameter.normal_(0.0, 1.0 / math.sqrt(parameter.shape[1]), generator=generator)


def build_target(shapes: SyntheticShapes, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The random target, on `device` in `dtype`, in eval mode with `sdpa` attention (see the module doc)."""
    generator = torch.Generator(device).manual_seed(seed)
    with torch.device(device):
        target = Qwen3ForCausalLM._from_config(target_config(shapes), dtype=dtype, attn_implementation="sdpa")
    with torch.no_grad():
        _randomize(target.model, shapes.num_layers, generator)
        embeddings = target.model.embed_tokens.weight
        embeddings.normal_(0.0, 1.0, generator=generator)
        # Row v of the lm_head is token v - 1's embedding: the logit of v is largest after token v - 1.
        target.lm_head.weight.copy_(embeddings.roll(1, dims=0))
    target.generation_config.bos_token_id = target.generation_config.eos_token_id = None
    target.generation_config.pad_token_id = None
    return target.eval()


def build_head(shapes: SyntheticShapes, target, seed: int = 1) -> JetSpecDraftModel:
    """The random head for `target`, on its device and in its dtype."""
    parameter = target.model.embed_tokens.weight
    generator = torch.Generator(parameter.device).manual_seed(seed)
    with torch.device(parameter.device):
        head = JetSpecDraftModel._from_config(head_config(shapes), dtype=parameter.dtype, attn_implementation="sdpa")
    with torch.no_grad():
        _randomize(head, shapes.head_layers, generator)
    head = head.eval()
    check_head_fits_target(head, target)
    return head


def synthetic_prompt(shapes: SyntheticShapes, length: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A `(1, length)` prompt of random token ids, drawn on the host (the same ids on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, shapes.vocab_size, (1, length), generator=generator).to(device)


__all__ = ["SHAPES", "SyntheticShapes", "build_head", "build_target", "head_config", "synthetic_prompt",
           "target_config"]
