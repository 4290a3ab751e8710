"""Run the ``lazyexport`` command with every block write slowed down, for interruption tests.

    python tests/helpers/slow_cli.py MARKER_FILE SECONDS_PER_BLOCK lazyexport-arguments...

Each block write sleeps SECONDS_PER_BLOCK first, then writes, then appends a line to
MARKER_FILE, so a test can wait until some blocks are written before sending a signal. At the
end the number of blocks this process wrote is printed to stderr as ``blocks-written=N``.
"""

from __future__ import annotations

import sys
import threading
import time

from lazyexport import cli, run

marker, delay = sys.argv[1], float(sys.argv[2])
written = [0]
lock = threading.Lock()
original = run._write_block


def slow_write_block(*args, **kwargs):
    time.sleep(delay)
    out = original(*args, **kwargs)
    with lock:
        written[0] += 1
        with open(marker, "a") as f:
            f.write("block\n")
    return out


run._write_block = slow_write_block
try:
    code = cli.main(sys.argv[3:])
finally:
    print(f"blocks-written={written[0]}", file=sys.stderr)
sys.exit(code)
