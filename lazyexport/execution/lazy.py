"""``compute=False``: an :class:`~.job.ExportJob`'s block writes and commit as a dask graph.

The job is prepared when the graph is made, as for ``compute=True``: the same preflight
(existing outputs, the output's directory, leftovers), token, target and - with ``resume`` - the
journal of what an interrupted export of the same plan finished; those blocks get no task. Each
block task writes one of the plan's blocks (the same blocks ``compute=True`` writes) and
records it in the journal; the last task commits. The graph reads the source through its own
dask keys, so exports of one source computed together read each source chunk once.

A mark beside the output (a hidden file, or an object at a URL) says the job has not committed:
every task checks it, and the commit removes it, so computing the Delayed twice (in any process)
raises AlreadyComputedError and leaves the output as it is. A computation that fails leaves the
temporary output (with ``resume``: for the next ``resume=True`` export to continue; else for
the next export of the output, or ``lazyexport clean``, to remove).

Outputs at a URL: Zarr is written in place in the store; other formats are written to a local
staging directory and uploaded by the commit (so their tasks must run on this machine).
Progress is reported by the tasks, in the process that runs them (with dask's threads or
synchronous scheduler: this one). A cancel event and a scheduler do not apply: the
computation is the caller's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.utils import SerializableLock

from .. import remote
from ..errors import AlreadyComputedError
from ..plan import ExportPlan
from ..remote import is_url
from ..resume import RemoteJournal, plan_token
from ..storage import create_new, new_token, temp_path
from .job import ExportJob, check_local, check_remote, commit, open_job, open_remote_job
from .preflight import refuse_existing
from .results import ExportResult, Progress, ProgressCallback, make_result


@dataclasses.dataclass
class _Mark:
    """The mark of a ``compute=False`` export not computed yet, and the output it names."""

    path: Path
    output: str
    values: dict = dataclasses.field(default_factory=dict)  # storage options at a URL

    def check(self) -> None:
        """Refuse to compute an export whose mark is gone: it committed already (or another
        export of its output removed its temporary output)."""
        here = (
            remote.exists_object(self.path, self.values)
            if is_url(self.path)
            else self.path.exists()
        )
        if not here:
            raise AlreadyComputedError(
                f"this compute=False export of {self.output} was computed already (it commits "
                "once, so its output is left as it is), or another export of the same output "
                "removed its temporary output; call export(..., compute=False) again for a new one"
            )


class _Counter:
    """Counts the blocks written for the ``progress`` callback (in the process running them)."""

    def __init__(self, plan: ExportPlan, progress: ProgressCallback | None, done: int):
        self.progress, self.total, self.nbytes = progress, plan.nblocks, plan.nbytes
        self.itemsize, self.done = plan.dtype.itemsize, done
        self.bytes = int(self.nbytes * done / self.total) if self.total else 0  # about
        self.start = time.perf_counter()
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    def add(self, block: np.ndarray) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += 1
            self.bytes = min(self.bytes + block.size * self.itemsize, self.nbytes)
            event = Progress(
                self.done, self.total, self.bytes, self.nbytes, time.perf_counter() - self.start
            )
        self.progress(event)


def export_lazily(
    plan: ExportPlan,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> Any:
    """``plan``'s export as a ``dask.delayed`` object: computing it writes every block not
    finished yet and then commits (the atomic finish), and returns the :class:`ExportResult`
    (see the module docs)."""
    job, mark, finish = _prepare(plan, overwrite, resume)
    data = plan.result.data.rechunk(plan.blocks)  # one task per planned block, as writers expect
    lock = SerializableLock() if plan.writer.capabilities.single_writer else None
    counter = _Counter(plan, progress, len(job.done))
    offsets = [np.cumsum((0, *c)) for c in data.chunks]
    # unoptimized: optimizing the array graph here would fuse each read of a source chunk into
    # this export's tasks, and exports computed together could not share it
    blocks = data.to_delayed(optimize_graph=False)
    store = dask.delayed(_store_block, pure=False)
    written = []
    for index in np.ndindex(*blocks.shape):
        if index in job.done:
            continue
        where = tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, index))
        written.append(store(blocks[index], where, index, job, lock, mark, counter))
    return dask.delayed(_commit_lazily, pure=False)(written, job, mark, finish, resume)


def _prepare(plan: ExportPlan, overwrite: bool, resume: bool) -> tuple[ExportJob, _Mark, Callable]:
    """The job of a ``compute=False`` export, its mark made, and what finishes its commit (the
    upload of a staged output)."""
    caps = plan.writer.capabilities
    url = is_url(plan.output)
    resumable = resume and caps.resumable and (caps.object_store or not url)
    token = plan_token(plan) if resumable else new_token()  # not registered as running
    named = f"{plan.output}/{plan.internal}".rstrip("/")
    if url:
        # (a resumable output whose commit ran is refused as existing, or replaced)
        existing, _ = check_remote(plan, token, resumable)
        if existing and not overwrite:
            refuse_existing(plan, existing)
        if not caps.object_store:
            return _staged(plan, token, named)
        if existing:  # a store has no rename to swap it at the end
            plan.writer.delete(plan.spec)
        journal = RemoteJournal(temp_path(plan.output, token), plan.blocks) if resumable else None
        job = open_remote_job(plan, token, journal)
        mark = _Mark(temp_path(plan.output, token, "lazy"), named, remote.current_options())
        if not remote.exists_object(mark.path, mark.values):
            remote.put_bytes(mark.path, b"", mark.values)
        return job, mark, functools.partial(_unmark, mark)
    check_local(plan, token, overwrite)
    job = open_job(plan, token, resumable)
    mark = _Mark(temp_path(plan.paths[0], token, "lazy"), named)
    try:
        _make_mark(mark.path, resumable)
    except BaseException:
        job.target.abort()
        raise
    job.target.scratch.append(mark.path)  # the commit removes it with the temporaries
    return job, mark, _as_is


def _make_mark(path: Path, resumable: bool) -> None:
    try:
        os.close(create_new(path))
    except FileExistsError:
        if not resumable:  # a resumed export finds its interrupted run's mark
            raise


def _as_is(paths: list[Path]) -> list[Path]:
    return paths


def _unmark(mark: _Mark, paths: list[Path]) -> list[Path]:
    remote.delete_prefix(mark.path, values=mark.values)
    return paths


def _staged(plan: ExportPlan, token: str, named: str) -> tuple[ExportJob, _Mark, Callable]:
    """A job writing ``plan``'s URL outputs in a local staging directory, and the upload that
    finishes its commit (which removes the staging directory, and with it the mark)."""
    staging = Path(tempfile.mkdtemp(prefix="lazyexport-upload-"))
    local = {p: staging.joinpath(*p.parts[1:]) for p in plan.paths}
    staged = dataclasses.replace(
        plan, output=local[plan.output], paths=tuple(local[p] for p in plan.paths)
    )
    job = open_job(staged, new_token(), False)
    mark = _Mark(staging / ".lazyexport-lazy", named)
    os.close(create_new(mark.path))

    def upload(_: list[Path]) -> list[Path]:
        try:
            return remote.upload([(local[p], p) for p in plan.paths], token)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    return dataclasses.replace(job, plan=plan, made=[staging]), mark, upload


def _store_block(
    block: np.ndarray,
    where: tuple[slice, ...],
    index: tuple[int, ...],
    job: ExportJob,
    lock: Any,
    mark: _Mark,
    counter: _Counter,
) -> float:
    """Write one block and record it in the job's journal; return when its writing started
    (wall clock: tasks may run anywhere)."""
    mark.check()
    started = time.time()
    with lock if lock is not None else contextlib.nullcontext():
        job.target.write(block, where)
    if job.journal is not None:
        job.journal.record(index)
    counter.add(block)
    return started


def _commit_lazily(
    written: list[float], job: ExportJob, mark: _Mark, finish: Callable, resume: bool
) -> ExportResult:
    """Commit once every block is written; the result's time runs from the first block's
    start (not from when the graph was built)."""
    mark.check()
    first = min(written, default=time.time())
    paths = finish(commit(job))  # the journal goes with the temporaries
    # the time the blocks took on the wall clock, as a perf_counter start for make_result
    return make_result(job.plan, paths, time.perf_counter() - (time.time() - first), resume)
