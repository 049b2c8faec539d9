"""`jetspec-hf bench`: the tree path side by side with plain decoding and every peer, in one process.

Modules, one job each: `options` (command line), `prompts` (prompt sets), `loading` (models, environment),
`methods` (each decoding method as a callable), `measure` (timing, forward counts, the lossless check),
`report` (JSON rows, per-round breakdown, Markdown), `plot` (the PNG), `run` (the driver, `main`).

`--synthetic` is a mode of its own (`synthetic`, the driver): random weights at Qwen3-8B shapes (`synthetic_models`),
an oracle drafter that forces τ (`oracle`), forward and generate timings (`synthetic_measure`), host-sync counts
(`host_syncs`), per-stage times without syncs (`stage_events`), `--compile` (`compilation`), options
(`synthetic_options`) and its report (`synthetic_report`).
"""

from .run import main, run_benchmark

__all__ = ["main", "run_benchmark"]
