"""Logging and progress bars, following transformers' conventions.

Modules log through `get_logger(__name__)`: children of one library logger, `jetspec_hf`, which writes bare messages
to stderr at WARNING and above by default (`JETSPEC_HF_VERBOSITY=info` or `set_verbosity_info()` shows progress
notes; the command line turns INFO on). Progress bars are transformers' `tqdm`, so the one switch,
`transformers.utils.logging.disable_progress_bar()` (or `HF_HUB_DISABLE_PROGRESS_BARS=1`), silences them all.
Results a command prints (a summary, the files it wrote) go to stdout with `print`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from transformers.utils import logging as transformers_logging

LIBRARY_LOGGER = "jetspec_hf"
VERBOSITY_ENVIRONMENT = "JETSPEC_HF_VERBOSITY"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}
_configured = False
_lock = threading.Lock()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (test runners and notebooks replace it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass  # always the current sys.stderr


def _configure_library_logger() -> None:
    global _configured
    with _lock:
        if _configured:
            return
        library = logging.getLogger(LIBRARY_LOGGER)
        library.addHandler(_StderrHandler())
        level_name = os.environ.get(VERBOSITY_ENVIRONMENT, "warning").lower()
        library.setLevel(_LEVELS.get(level_name, logging.WARNING))
        # Like transformers' own loggers: the application's root handlers would print every message twice.
        library.propagate = False
        _configured = True


def get_logger(name: str = LIBRARY_LOGGER) -> logging.Logger:
    """The logger of a module of this package (pass `__name__`)."""
    _configure_library_logger()
    return logging.getLogger(name)


def set_verbosity(level: int) -> None:
    """Show the package's messages at `level` and above (`logging.INFO`, `logging.WARNING`, ...)."""
    _configure_library_logger()
    logging.getLogger(LIBRARY_LOGGER).setLevel(level)


def set_verbosity_info() -> None:
    """Show progress notes (what the command line does)."""
    set_verbosity(logging.INFO)


def progress_bar(*args, mininterval: float = 5.0, **kwargs):
    """A `tqdm` progress bar that transformers' progress-bar switch controls; it redraws at most every
    `mininterval` seconds, so that a log file collects few lines."""
    return transformers_logging.tqdm(*args, mininterval=mininterval, **kwargs)


__all__ = ["get_logger", "progress_bar", "set_verbosity", "set_verbosity_info"]
