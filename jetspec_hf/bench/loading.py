"""Loading the benchmark's models, the bundled defaults, and a description of the machine the numbers come from."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from ..bundled import BUNDLED_MODELS, BUNDLED_PROMPTS
from ..dtypes import DTYPE_NAMES, torch_dtype
from ..extras import require_extra
from ..prompts import JSON_SUFFIXES
from ..weights_fingerprint import folder_fingerprint

DTYPES = {name: torch_dtype(name) for name in DTYPE_NAMES}
# Where a checkout's files are reported from: paths under it (the bundled models resolve to jetspec_hf/bundled/models/) are
# written relative to it, so that a committed report reads the same on every machine.
REPO_ROOT = Path(__file__).resolve().parents[2]
from .options import BUNDLED  # noqa: E402,F401  (the bundled pair's paths, defined with the options)


def require_bench_extras(dataset: str) -> None:
    """Check, before any model is loaded, the optional packages this run will need: matplotlib for the plot every
    run ends with, and `datasets` when the prompts are not a JSON Lines file."""
    require_extra("bench", "matplotlib", purpose="The benchmark plot (benchmark.png)")
    if Path(dataset).suffix not in JSON_SUFFIXES:
        require_extra("bench", "datasets", purpose=f"Reading prompts from {dataset!r} (not a .jsonl file)")


@dataclass
class BenchModels:
    """Everything the methods run on; optional models are `None` when not given."""

    target: torch.nn.Module
    tokenizer: object
    head: torch.nn.Module
    dflash_head: torch.nn.Module | None
    draft_lm: torch.nn.Module | None
    draft_tokenizer: object | None


def load_models(
    target: str,
    head: str,
    dflash_head: str | None,
    draft_lm: str | None,
    tokenizer: str | None,
    device: str,
    dtype: torch.dtype,
) -> BenchModels:
    """Load the target (sdpa attention: verification needs a 4D tree mask), the heads and the draft LM, in eval
    mode on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..modeling_jetspec import JetSpecDraftModel

    from ..targets import resolve_target

    def causal_lm(path):
        model = AutoModelForCausalLM.from_pretrained(resolve_target(path), dtype=dtype, attn_implementation="sdpa")
        return model.to(device).eval()

    def draft_head(path):
        model = JetSpecDraftModel.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
        return model.to(device).eval()

    target_model = causal_lm(target)
    target_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer or resolve_target(target)))
    draft_model = causal_lm(draft_lm) if draft_lm else None
    draft_tokenizer = None
    if draft_model is not None and draft_model.config.vocab_size != target_model.config.vocab_size:
        # A draft LM with another vocabulary runs through universal assisted decoding, which needs its tokenizer.
        draft_tokenizer = AutoTokenizer.from_pretrained(str(draft_lm))
    return BenchModels(
        target=target_model,
        tokenizer=target_tokenizer,
        head=draft_head(head),
        dflash_head=draft_head(dflash_head) if dflash_head else None,
        draft_lm=draft_model,
        draft_tokenizer=draft_tokenizer,
    )


def head_weights_fingerprint(location: str | None) -> str | None:
    """The weights fingerprint (`jetspec_hf.weights_fingerprint`) of the head at a folder or cached repo id, as
    stored on disk: what a model card checks a bench report against. `None` when the files cannot be found."""
    if location is None:
        return None
    folder = Path(location)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(location, allow_patterns=["*.safetensors"], local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached, or not a repo id: the report simply records no fingerprint
            return None
    return folder_fingerprint(folder)


def _cpu_name() -> str:
    # /proc/cpuinfo names the model on Linux; platform.processor() is often empty there.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment(device: str, dtype_name: str) -> dict:
    """The `environment` block of the JSON report."""
    import transformers

    environment = {
        "device": device,
        "dtype": dtype_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
    }
    if torch.device(device).type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return environment


__all__ = [
    "BUNDLED",
    "BUNDLED_PROMPTS",
    "BenchModels",
    "DTYPES",
    "REPO_ROOT",
    "describe_environment",
    "head_weights_fingerprint",
    "load_models",
    "require_bench_extras",
]
