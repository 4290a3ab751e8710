"""Interruptions of the command: SIGTERM raised like Ctrl-C, and the exit status of each.

Standard library only, so that :mod:`lazyexport.entry` can install :func:`raise_terminated`
before the command (numpy, dask, ...) is imported; :mod:`lazyexport.cli` installs it again and
ends an interrupted command with :func:`exit_status`.
"""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that an export cancels the same way."""


def raise_terminated(signum, frame):
    raise Terminated()


def exit_status(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (SIGINT), 143 (128 + 15) for SIGTERM."""
    return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
