"""Run the ``lazyexport`` command and SIGKILL it at one step of its final commit.

    python tests/helpers/kill_at_commit.py STEP lazyexport-arguments...

The commit of an export is: write the commit record, rename each temporary output to its final
name, remove the record. STEP 0 kills just before the record is written, STEP k (1 <= k <= n)
just before the k-th rename, STEP n+1 just before the record is removed. A test then checks that
what the killed export left can be finished (``--resume``, ``lazyexport clean``) into exactly
what an uninterrupted export writes.
"""

from __future__ import annotations

import os
import signal
import sys

from lazyexport import cli
from lazyexport.storage import local as storage

step = int(sys.argv[1])
renames = [0]
original_write, original_replace, original_remove = (
    storage.write_durably,
    storage.replace,
    storage.remove,
)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def write_durably(path, text):
    if step == 0 and str(path).endswith(".commit"):
        die()
    return original_write(path, text)


def replace(temp, final):
    renames[0] += 1
    if renames[0] == step:
        die()
    return original_replace(temp, final)


def remove(path):
    if step > 0 and str(path).endswith(".commit") and renames[0] == step - 1:
        die()
    return original_remove(path)


storage.write_durably, storage.replace, storage.remove = write_durably, replace, remove
sys.exit(cli.main(sys.argv[2:]))
