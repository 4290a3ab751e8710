"""Execute a plan: schedule block writes, report progress, cancel, finish atomically.

Every block of the planned result is computed and handed to the writer's target by one task
(``map_blocks``), so reading, transforming and writing a block happen together and no block
is kept once written. The scheduler runs at most ``plan.workers`` such tasks at a time.
Outputs are written under temporary names and renamed only when every block succeeded; on
any failure or cancellation (Ctrl-C included) the temporary output is removed — unless the
export was asked to resume (``resume=True``, formats that can: see :mod:`lazyexport.resume`),
which keeps it with a journal of the finished blocks, and skips those blocks the next time.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.local
import dask.threaded
import numpy as np
import zarr
from dask.callbacks import Callback
from dask.core import flatten

from .errors import ExportCancelled, OutputExistsError, SettingsError
from .plan import ExportPlan, build_plan
from .resume import Journal, open_resumable
from .settings import ExportSettings


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where an export stands; handed to the ``progress`` callback after every block."""

    blocks_done: int
    blocks_total: int
    bytes_done: int        # uncompressed result bytes written so far
    bytes_total: int
    elapsed: float

    @property
    def fraction(self) -> float:
        return self.blocks_done / self.blocks_total if self.blocks_total else 1.0

    @property
    def eta(self) -> float | None:
        if not self.bytes_done:
            return None
        return self.elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    format: str
    output: Path                # the file / store (sequences: the first slice)
    paths: list[Path]           # every file or directory written
    internal: str               # dataset path inside an HDF5 file / Zarr store ("" if none)
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: tuple[str, ...]
    nbytes: int                 # uncompressed size of the exported data
    seconds: float
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = str(self.output) + (f"/{self.internal}" if self.internal else "")
        if len(self.paths) > 1:
            where += f" (+{len(self.paths) - 1} more files)"
        rate = self.nbytes / self.seconds / 1e6 if self.seconds else 0.0
        return (f"wrote {self.format} {where}: {''.join(self.axes)} {self.shape} {self.dtype}, "
                f"{self.nbytes / 1e6:.1f} MB in {self.seconds:.2f} s ({rate:.0f} MB/s)")


ProgressCallback = Callable[[Progress], Any]
ZARR_CONCURRENCY = 4


def _write_block(block: np.ndarray, target, journal: Journal | None = None, block_info=None) -> np.ndarray:
    location = tuple(slice(start, stop) for start, stop in block_info[0]["array-location"])
    written = target.write(np.ascontiguousarray(block), location)
    if journal is not None:
        journal.record(block_info[0]["chunk-location"])
    return np.full((1,) * block.ndim, written, dtype=np.int64)


class _Tracker(Callback):
    """Counts finished write tasks for progress, and stops the run when cancelled."""

    def __init__(self, plan: ExportPlan, layer: str, progress: ProgressCallback | None,
                 cancel: threading.Event | None, skipped: set[tuple[int, ...]] = frozenset()):
        super().__init__()
        self.layer, self.progress, self.cancel = layer, progress, cancel
        self.total, self.nbytes = plan.nblocks, plan.nbytes
        self.done = len(skipped)    # blocks an interrupted run finished count as done
        self.bytes = sum(math.prod(plan.blocks[d][i] for d, i in enumerate(index)) for index in skipped) \
            * plan.dtype.itemsize
        self.start = time.perf_counter()
        self.lock = threading.Lock()

    def _pretask(self, key, dsk, state):
        if self.cancel is not None and self.cancel.is_set():
            raise ExportCancelled("export cancelled")

    def _posttask(self, key, result, dsk, state, worker_id):
        if not (isinstance(key, tuple) and key and key[0] == self.layer):
            return
        with self.lock:
            self.done += 1
            self.bytes += int(np.sum(result))
            event = Progress(self.done, self.total, min(self.bytes, self.nbytes), self.nbytes,
                             time.perf_counter() - self.start)
        if self.progress is not None:
            self.progress(event)


def _run_tasks(written: da.Array, keys: Sequence[tuple], scheduler: str, workers: int) -> None:
    """Compute the write tasks ``keys`` of ``written``. Returns (or raises) only once no write
    is running any more, also when interrupted, so the temporary output can then be removed."""
    if not keys:
        return
    (written,) = dask.optimize(written)
    graph = written.__dask_graph__().cull(set(keys))
    if scheduler == "sync":
        dask.local.get_sync(graph, list(keys))
        return
    pool = ThreadPoolExecutor(workers)
    try:
        dask.threaded.get(graph, list(keys), pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _local_scheduler(scheduler: Any) -> str:
    if scheduler in (None, "threads", "threading"):
        return "threads"
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return "sync"
    raise SettingsError(f"unknown scheduler {scheduler!r}; choose 'threads' or 'synchronous'")


def execute(
    plan: ExportPlan,
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    scheduler: Any = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
) -> ExportResult:
    """Write ``plan``'s result. Existing outputs are replaced only with ``overwrite=True``.

    With ``resume=True`` and a format that can resume (zarr, tiff-sequence), a failed or
    cancelled export keeps its temporary output, and the next ``resume=True`` export of the
    same plan continues it; other formats export from the start (and clean up as usual)."""
    existing = plan.writer.existing(plan)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"{existing[0]}{more} exists already; pass overwrite=True (--overwrite) to replace it")
    scheduler_name = _local_scheduler(scheduler)
    start = time.perf_counter()
    if resume and plan.writer.resumable:
        target, journal, done = open_resumable(plan)
    else:
        if resume:
            plan.notes.append(f"{plan.writer.name} outputs cannot resume; exported from the start")
        target, journal, done = plan.writer.open(plan), None, set()
    try:
        data = plan.result.data
        written = da.map_blocks(
            _write_block, data, target=target, journal=journal, dtype=np.int64,
            chunks=tuple((1,) * len(c) for c in data.chunks),
            meta=np.empty((0,) * data.ndim, dtype=np.int64),
        )
        keys = [k for k in flatten(written.__dask_keys__()) if tuple(k[1:]) not in done]
        # zarr decodes up to async.concurrency chunks at once per read: keep that memory bounded
        with _Tracker(plan, written.name, progress, cancel, skipped=done), \
                zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}):
            _run_tasks(written, keys, scheduler_name, plan.workers)
        paths = target.commit()
    except BaseException:
        if journal is None:
            target.abort()
        else:
            target.close()      # keep the temporary output and the journal for the next run
        raise
    if journal is not None:
        journal.remove()
    return ExportResult(
        format=plan.writer.name, output=plan.output, paths=paths, internal=plan.internal,
        shape=plan.shape, dtype=plan.dtype, axes=plan.axes, nbytes=plan.nbytes,
        seconds=time.perf_counter() - start, notes=tuple(plan.notes),
    )


def export(
    source: Any,
    settings: ExportSettings | None = None,
    *,
    nickname: str | None = None,
    overwrite: bool = False,
    memory_limit: Any = None,
    scheduler: Any = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
) -> ExportResult:
    """Export ``source`` (a path, or a numpy / dask / xarray array) with ``settings``.

    Returns an :class:`ExportResult` saying what was written. ``memory_limit`` (bytes or text
    like ``"512MiB"``) bounds the memory of the whole export; ``progress`` is called after every
    block with a :class:`Progress`; setting the ``cancel`` event stops the export and removes
    its temporary output (kept, with ``resume=True``, for the next ``resume=True`` export to
    continue: see :func:`execute`).
    """
    plan = build_plan(source, settings, nickname=nickname, memory_limit=memory_limit)
    return execute(plan, overwrite=overwrite, progress=progress, scheduler=scheduler, cancel=cancel,
                   resume=resume)
