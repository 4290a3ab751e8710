"""This process's C heap (glibc's malloc): kept for the next block while block tasks run, handed
back to the system when they are done.

A block task allocates its block (32 MiB by default) and, chunk by chunk, the compressed bytes
it reads and encodes (megabytes each where the data compresses little), and frees them; the next
task allocates the same again. glibc serves allocations above its mmap threshold (at most
32 MiB while it adjusts it itself) with fresh pages from the kernel, zeroed and faulted in one
by one, and hands freed heap above its trim threshold back at once: on a 1 GiB Zarr copy of
noisy data that was about 250,000 page faults (the volume in 4 KiB pages), 9 % of the export's
CPU time; kept, 33,000 (tests/test_heap.py counts them). While an export's block tasks run
in this process's threads, :func:`reusing_freed_memory` raises both thresholds so a freed block
is reused by the next (the peak is the same: the memory is in use at the peak either way);
after them it hands the freed heap back (``malloc_trim``) and sets the thresholds to glibc's
defaults (128 KiB; glibc no longer adjusts them itself then, which keeps the least memory
between exports). Exports to a single writer (HDF5, one TIFF file), whose blocks are stored by
the exporting thread, are left alone: blocks freed in another thread than their own were kept
beside new ones (20 MiB more at the peak in the demo). On other C libraries nothing is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from typing import Any

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 256 * 2**20  # allocations below this come from the heap; freed heap up to it kept
AFTER = {_M_MMAP_THRESHOLD: 128 * 2**10, _M_TRIM_THRESHOLD: 128 * 2**10}  # glibc's defaults

_lock = threading.Lock()
_users = 0  # exports running block tasks in this process now


@functools.cache
def _glibc() -> Any:
    """glibc, or None where the C library is another (no ``mallopt`` / ``malloc_trim``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc's, not every C library's)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def release_memory() -> None:
    """Hand memory freed by the block writes back to the system before a writer's own second
    pass (pyramid levels, TIFF streaming). glibc keeps freed heap pages of every thread's arena
    resident until trimmed, so without this the second pass would add to the first's peak."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextlib.contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """While block tasks run in this process (see the module's docstring); exports running at
    once share it: the last one out hands the heap back."""
    global _users
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        _users += 1
        if _users == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for option, value in AFTER.items():
                    libc.mallopt(option, value)
                libc.malloc_trim(0)
