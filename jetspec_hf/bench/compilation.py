"""`--compile` for the synthetic benchmark: which parts of a forward run through `torch.compile`, and for how long.

`static` is what a user gets: `generate` with a static cache and a `compile_config`, which compiles plain decoding's
step forward and the tree path's verify forward (trees padded to a few sizes, see
`jetspec_hf.generation.verification`). `mlp` compiles only the target's MLP blocks, from outside. Those blocks
hold no cache state and every decoder layer has the same one, so one graph serves all layers (parameters are graph
inputs), with a dynamic token count for plain steps, prefills and verifies alike (on a CPU three graphs were
compiled in all: one token, any count, and the inference-mode variant the tree loop runs in). A whole decoder
layer does not compile usefully from outside: its attention reads the cache object's per-layer state, and dynamo
then specialises on each layer index and on whether that layer's cache is initialised, past its recompile limit.

Compiled rows are checked token for token against the uncompiled plain reference like every other row, so a
compiled kernel that changed a greedy choice shows as a mismatch (and a non-zero exit), never as a speed.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .methods import compile_settings

COMPILE_MODES = ("none", "mlp", "static")
# What each mode leaves uncompiled, stated in the report next to the numbers.
NOT_COMPILED = "attention (tree and plain), the cache update, the head's forward, the lm_head"
STATIC_NOT_COMPILED = "the prefill, the head's forward, the last rounds whose padded tree would not fit the cache"


@dataclass
class CompiledSetup:
    """What a compile mode compiled (`None`: nothing), and the `generate` settings every generation must use."""

    description: str | None
    generation_settings: dict = field(default_factory=dict)


@contextmanager
def compiled(target, mode: str, backend: str = "inductor"):
    """Run the enclosed work with `target`'s `mode` parts compiled; the eager forwards are put back on exit.

    Yields a `CompiledSetup`.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "none":
        yield CompiledSetup(None)
        return
    if mode == "static":
        try:
            yield CompiledSetup(
                f"static cache + compile_config ({backend}): plain steps and tree verifies; not compiled: "
                f"{STATIC_NOT_COMPILED}",
                compile_settings(backend),
            )
        finally:
            torch._dynamo.reset()
        return
    mlps = [layer.mlp for layer in target.model.layers]
    for mlp in mlps:
        # An instance attribute shadows the class's forward; deleting it restores the eager one.
        mlp.forward = torch.compile(mlp.forward, backend=backend, dynamic=True)
    try:
        yield CompiledSetup(f"target MLP blocks ({backend}); not compiled: {NOT_COMPILED}")
    finally:
        for mlp in mlps:
            del mlp.forward
        torch._dynamo.reset()


__all__ = ["COMPILE_MODES", "CompiledSetup", "NOT_COMPILED", "compiled"]
