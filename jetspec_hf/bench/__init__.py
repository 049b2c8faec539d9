"""`jetspec-hf bench`: the tree path side by side with plain decoding and every peer, in one process.

Modules, one job each: `options` (command line), `prompts` (prompt sets), `loading` (models, environment),
`methods` (each decoding method as a callable), `measure` (timing, forward counts, the lossless check),
`report` (JSON rows, per-round breakdown, Markdown), `plot` (the PNG), `run` (the driver, `main`).
"""

from .run import main, run_benchmark

__all__ = ["main", "run_benchmark"]
