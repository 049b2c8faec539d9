"""jetspec_hf: lossless JetSpec tree speculative decoding for Qwen3 targets in transformers."""

from transformers import AutoConfig, AutoModel

from .configuration_jetspec import JetSpecConfig
from .generation import JetSpecGenerateOutput, RoundProfiler, enable, is_enabled
from .modeling_jetspec import JetSpecDraftModel
from .released_format import guard_auto_model

# Registered on import so that AutoConfig/AutoModel resolve `model_type: jetspec` without trust_remote_code, and
# refuse a released-format head instead of building a plain Qwen3Model from it.
AutoConfig.register(JetSpecConfig.model_type, JetSpecConfig, exist_ok=True)
AutoModel.register(JetSpecConfig, JetSpecDraftModel, exist_ok=True)
guard_auto_model()

__version__ = "0.1.0"

__all__ = [
    "JetSpecConfig",
    "JetSpecDraftModel",
    "JetSpecGenerateOutput",
    "RoundProfiler",
    "__version__",
    "enable",
    "is_enabled",
]
