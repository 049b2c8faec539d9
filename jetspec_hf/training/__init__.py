"""Training recipe for JetSpec / DFlash draft heads on a frozen Qwen3 target.

Modules, one job each: `data` (self-distillation data), `features` (tapped target features, cached or not),
`objective` (the packed multi-block loss), `batches` (deterministic batches), `heads` (head config from the
target's), `trainer` (the accelerate loop). The command line is `python -m jetspec_hf.training` /
`jetspec-hf train`.
"""

from .data import encode_prompts, generate_continuations, load_prompts, load_sequences, save_sequences
from .features import FeatureCache, TargetFeatureExtractor, build_feature_cache
from .heads import head_config_from_target
from .objective import ObjectiveSettings, block_objective, pack_blocks, packed_block_mask, sample_anchors
from .trainer import HeadTrainer, HeadTrainingArguments

__all__ = [
    "FeatureCache",
    "HeadTrainer",
    "HeadTrainingArguments",
    "ObjectiveSettings",
    "TargetFeatureExtractor",
    "block_objective",
    "build_feature_cache",
    "encode_prompts",
    "generate_continuations",
    "head_config_from_target",
    "load_prompts",
    "load_sequences",
    "pack_blocks",
    "packed_block_mask",
    "sample_anchors",
    "save_sequences",
]
