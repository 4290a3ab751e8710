"""Counting an export's work for its ``progress`` callback: the blocks written (their bytes),
then the target's finishing work (an OME-Zarr pyramid's levels, reported by
:meth:`~lazyexport.formats.base.Target.finish` from its threads), then the commit.

Invariants: events are made and handed to the callback under one lock, in order, so their
:attr:`~lazyexport.execution.results.Progress.fraction` never falls; with finishing work, the
fraction stays below 1 until :meth:`WorkCounter.committed` reports the one event at 1.0.
"""

from __future__ import annotations

import threading
import time

from .results import Progress, ProgressCallback


class WorkCounter:
    """The work done of ``blocks_total`` blocks of ``bytes_total`` bytes (``blocks_done`` and
    ``bytes_done`` of them by an interrupted run), and of ``finishing_total`` bytes of finishing
    work, as :class:`Progress` events to ``progress`` (None: counted only)."""

    def __init__(
        self,
        progress: ProgressCallback | None,
        blocks: tuple[int, int],
        nbytes: tuple[int, int],
        finishing_total: int,
    ):
        self.progress = progress
        (self.blocks_done, self.blocks_total), (self.bytes_done, self.bytes_total) = blocks, nbytes
        self.finishing_done, self.finishing_total = 0, finishing_total
        self.lock = threading.Lock()
        self.start = time.perf_counter()

    def block(self, nbytes: int) -> None:
        """One block of ``nbytes`` written."""
        with self.lock:
            self.blocks_done += 1
            self.bytes_done += nbytes
            self._report()

    def finishing(self, nbytes: int) -> None:
        """``nbytes`` of the finishing work done."""
        with self.lock:
            self.finishing_done += nbytes
            self._report()

    def committed(self) -> None:
        """The commit is done: the event at 1.0 where there was finishing work (without, the
        last block's was)."""
        if self.finishing_total:
            with self.lock:
                self._report(committed=True)

    def _report(self, committed: bool = False) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    self.blocks_done,
                    self.blocks_total,
                    min(self.bytes_done, self.bytes_total),
                    self.bytes_total,
                    time.perf_counter() - self.start,
                    min(self.finishing_done, self.finishing_total),
                    self.finishing_total,
                    committed,
                )
            )
