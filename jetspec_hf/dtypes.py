"""The floating-point dtypes the command lines accept, by name, and their torch objects.

Names only at import time (no torch), so that argument definitions can list them for an immediate `--help`.
"""

from __future__ import annotations

from typing import Literal

DtypeName = Literal["float32", "bfloat16", "float16"]
DTYPE_NAMES: tuple[str, ...] = DtypeName.__args__


def torch_dtype(name: str):
    """`"bfloat16"` -> `torch.bfloat16`; an error naming the choices for anything else."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"Unknown dtype {name!r}: choose one of {', '.join(DTYPE_NAMES)}.")
    import torch

    return getattr(torch, name)


__all__ = ["DTYPE_NAMES", "DtypeName", "torch_dtype"]
