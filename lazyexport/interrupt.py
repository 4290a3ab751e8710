"""Interruptions of the command: SIGINT and SIGTERM raised as KeyboardInterrupt, and the exit
status of each.

Standard library only, so that :mod:`lazyexport.entry` can install :func:`raise_interrupt`
before the command (numpy, dask, ...) is imported; :mod:`lazyexport.cli` installs it again and
ends an interrupted command with :func:`exit_status`.

Python ignores an exception raised while it runs a weakref callback or a ``__del__`` ("Exception
ignored in ..."), so a signal that arrives just then would be lost and the command would carry
on. The handler therefore also records the signal until the command has caught it
(:func:`taken`); :func:`check`, called where the command can stop (between block tasks, and when
it ends), raises it again if it was lost. While the command runs, :func:`quiet_lost` keeps Python
from printing such a lost interruption ("Exception ignored in ... Traceback ..."): the command
reports it with its own one ``error:`` line.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_pending: list[int] = []  # signals raised as KeyboardInterrupt that the command has not caught yet


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that an export cancels the same way."""


def _raise(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def raise_interrupt(signum, frame):
    """The handler of SIGINT and SIGTERM: record the signal, raise it (:class:`Terminated` for
    SIGTERM)."""
    _pending.append(signum)
    _raise(signum)


def taken() -> None:
    """The command caught the interruption: nothing is pending."""
    _pending.clear()


def check() -> None:
    """Raise an interruption whose KeyboardInterrupt was lost (see the module's docstring)."""
    if _pending:
        signum = _pending[-1]
        _pending.clear()
        _raise(signum)


def interrupted_by(exc: BaseException) -> KeyboardInterrupt | None:
    """The interruption ``exc`` stands for: ``exc`` itself if it is one; else, while a signal is
    pending (raised in code that turned its KeyboardInterrupt into another error, as a library's
    clean-up can while it is imported), that signal's; None for any other error."""
    if isinstance(exc, KeyboardInterrupt):
        return exc
    if _pending:
        return Terminated() if _pending[-1] == signal.SIGTERM else KeyboardInterrupt()
    return None


def exit_status(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (SIGINT), 143 (128 + 15) for SIGTERM."""
    return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130


@contextmanager
def quiet_lost() -> Iterator[None]:
    """Within the block, an interruption that Python ignores (raised by :func:`raise_interrupt`
    in a ``__del__`` or weakref callback) is not printed; :func:`check` raises it again. Any
    other unraisable exception goes to the hook that was in place."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not (_pending and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
