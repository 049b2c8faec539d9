"""`jetspec-hf bench`: the tree path side by side with plain decoding and every peer, in one process.

Modules, one job each: `options` (command line), `prompts` (prompt sets), `loading` (models, environment),
`methods` (each decoding method as a callable), `measure` (timing, forward counts, the lossless check),
`report` (JSON rows, per-round breakdown, Markdown), `plot` (the PNG), `run` (the driver, `main`).

`--synthetic` is a mode of its own, in the `synthetic` package (random weights at Qwen3-8B shapes, an oracle drafter
that forces τ, forward and generate timings, host-sync counts); it shares per-stage times without syncs
(`stage_events`) and `--compile` (`compilation`) with nothing else here.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of `jetspec-hf bench` / `python -m jetspec_hf.bench`; returns the exit status (1 when any
    method's output differs from plain greedy decoding, unless `--allow-mismatch`).

    Arguments are parsed and checked, and the run described, before torch is imported: `--help` and argument
    errors answer at once.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--synthetic" in argv:
        # A mode with its own options (random weights, no models to load): see synthetic/.
        from .synthetic.run import main as synthetic_main

        return synthetic_main(argv)
    from .options import parse_args

    args = parse_args(argv)
    from .run import execute

    return execute(args, argv)


def __getattr__(name):
    if name == "run_benchmark":
        from .run import run_benchmark

        return run_benchmark
    raise AttributeError(name)


__all__ = ["main", "run_benchmark"]
