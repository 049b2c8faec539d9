"""jetspec_hf: lossless JetSpec tree speculative decoding for Qwen3 targets in transformers.

The public names load on first use, not with the package: transformers and torch take seconds to import, and
`jetspec-hf --help` needs neither. Loading `JetSpecConfig` or `JetSpecDraftModel` (which `enable` does too)
registers `model_type: jetspec` with transformers' `AutoConfig` and `AutoModel`.
"""

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "JetSpecConfig": ".configuration_jetspec",
        "JetSpecDraftModel": ".modeling_jetspec",
        "JetSpecGenerateOutput": ".generation",
        "RoundProfiler": ".generation",
        "enable": ".generation",
        "is_enabled": ".generation",
        "mark_row_safe": ".generation",
        "load_target": ".targets",
        "load_smollm2": ".targets",
    },
)

__all__ = [
    "JetSpecConfig",
    "JetSpecDraftModel",
    "JetSpecGenerateOutput",
    "RoundProfiler",
    "__version__",
    "enable",
    "is_enabled",
    "load_smollm2",
    "load_target",
    "mark_row_safe",
]
