"""Training recipe for JetSpec / DFlash draft heads on a frozen target (Qwen3 first; Llama, Qwen2, Mistral).

Modules, one job each: `data` (self-distillation data), `features` (tapped target features, cached or not),
`objective` (the packed multi-block loss), `batches` (deterministic batches), `heads` (head config from the
target's), `arguments` (the settings, from which the command line is built), `schedule` (learning rate),
`checkpoints` (saving and resuming), `run_folder` (the run's folders and log), `evaluation` (held-out numbers),
`trainer` (the accelerate loop). The command line is `python -m jetspec_hf.training` / `jetspec-hf train`.

Its names load on first use (see jetspec_hf/lazy_exports.py), so that `jetspec-hf train --help` imports no torch.
"""

from ..lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FeatureCache": ".features",
        "HeadTrainer": ".trainer",
        "HeadTrainingArguments": ".arguments",
        "ObjectiveSettings": ".objective",
        "TargetFeatureExtractor": ".features",
        "block_objective": ".objective",
        "build_feature_cache": ".features",
        "encode_prompts": ".data",
        "generate_continuations": ".data",
        "head_config_from_target": ".heads",
        "load_prompts": ".data",
        "load_sequences": ".data",
        "pack_blocks": ".objective",
        "packed_block_mask": ".objective",
        "sample_anchors": ".objective",
        "save_sequences": ".data",
    },
)

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
