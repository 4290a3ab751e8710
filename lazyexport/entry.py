"""The ``lazyexport`` command's entry point: the console script and ``python -m lazyexport``.

Importing what a command runs (numpy, dask, xarray, zarr, h5py, ...) takes a second or more; the
command line imports it only once it knows the command (see :mod:`lazyexport.cli`), and this
module imports nothing before the signal handlers are in place, so Ctrl-C exits with 130 and
SIGTERM with 143 (128 + 15) from the first moment on: never with a traceback, never silently.

Run as the program (no ``argv``: the console script, ``python -m lazyexport``), the process ends
with the command's status without finalizing the interpreter (:func:`_leave`): obstore's Tokio
runtime (Rust) is never shut down, and one of its threads still busy when the interpreter is torn
down aborts the process (SIGABRT, status 134) after the right output - as a Zarr source at a URL
that holds objects but no Zarr node did in about one run in six.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import NoReturn

from .interrupt import (
    Terminated,
    check,
    exit_status,
    interrupted_by,
    quiet_lost,
    raise_interrupt,
)


def _handle(signum: int, handler) -> None:
    try:
        signal.signal(signum, handler)
    # not the main thread (main() called from a thread): signals stay as they are
    except ValueError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Install the SIGINT and SIGTERM handlers, then import and run the command. An interruption
    outside the command's own handling (while the command is imported) ends the process with the
    same status as inside it."""
    _handle(signal.SIGTERM, raise_interrupt)
    _handle(signal.SIGINT, raise_interrupt)
    try:
        with quiet_lost():
            from .cli import main as command

            status = command(argv)
            check()  # a signal lost after the command's own handling
            if argv is None:  # the program itself: end the process here
                _leave(status)
        return status
    # outside the command's own handling: mostly while importing it
    except BaseException as caught:
        exc = interrupted_by(caught)  # also an error a library made of the interruption
        if exc is None:
            raise
        # exiting now: a second signal changes nothing
        for signum in (signal.SIGINT, signal.SIGTERM):
            _handle(signum, signal.SIG_IGN)
        print(
            f"error: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        # Leave at once: a KeyboardInterrupt raised in code that an extension module runs while it
        # is imported makes CPython kill itself with SIGINT at exit (status -2), even once caught.
        os._exit(exit_status(exc))


def _leave(status: int) -> NoReturn:
    """End the process with ``status`` as Python's own exit does - the threads that are not
    daemons joined, the ``atexit`` callbacks run (temporary directories, multiprocessing,
    logging, zarr's event loop), the standard streams flushed - but without tearing down the
    interpreter under threads of extension modules that are still running (see the module
    docs)."""
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
