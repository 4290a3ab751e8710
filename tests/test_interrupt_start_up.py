"""A signal that arrives while the command is imported ends it with the signal's status and one
``error:`` line, also when a library's code turned the KeyboardInterrupt into another error
(seen once in CI: an ``UnboundLocalError`` from a clean-up that ran during an import, exit 1 and a
traceback instead of 143)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from helpers import cli_env

SCRIPT = """
import signal, sys, types
from lazyexport import entry, interrupt

def command(argv):
    if {signum}:
        try:
            interrupt.raise_interrupt({signum}, None)
        except KeyboardInterrupt:  # as a library's clean-up can: another error instead
            raise UnboundLocalError("cannot access local variable 'retval'") from None
    raise UnboundLocalError("a plain bug")

fake = types.ModuleType("lazyexport.cli")
fake.main = command
sys.modules["lazyexport.cli"] = fake
sys.exit(entry.main([]))
"""


def _run(signum: int) -> subprocess.CompletedProcess:
    code = SCRIPT.format(signum=int(signum))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120
    )


@pytest.mark.parametrize(
    "signum,status,said",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_an_error_made_of_an_interruption_exits_as_the_interruption(signum, status, said):
    done = _run(signum)
    assert done.returncode == status, done.stderr
    assert done.stderr == f"error: {said}\n"


def test_an_error_without_an_interruption_is_not_taken_for_one():
    done = _run(0)
    assert done.returncode == 1
    assert "UnboundLocalError: a plain bug" in done.stderr
