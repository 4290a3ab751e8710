"""``compute=False``: an :class:`~.job.ExportJob`'s block writes and commit as a dask graph.

The job is prepared when the graph is made, as for ``compute=True``: the same preflight
(existing outputs, the output's directory, leftovers), token and target. Each block task writes
one of the plan's blocks (the same blocks ``compute=True`` writes); the last task commits. The
graph reads the source through its own dask keys, so exports of one source computed together
read each source chunk once. The job is handed to the tasks opaquely (not traversed by dask):
otherwise the plan's source and result arrays inside it would become dependencies of every task,
and every lazy export would compute the whole source, whatever its cutout.

A mark beside the output (a hidden file) says the job has not committed: every task checks it,
and the commit removes it, so computing the Delayed twice (in any process) raises
AlreadyComputedError and leaves the output as it is. A computation that fails leaves the
temporary output, for the next export of the output (or ``lazyexport clean``) to remove.

Refused (one line, naming what to use instead): ``resume=True`` (a graph cannot hold the
output's ``--resume`` claim from when it is made until it is computed, so it could write into
a running export's temporary output) and outputs at a URL (the store's writes, storage options
and staging would outlive the call that checked them); ``compute=True`` does both. Progress is
reported by the tasks, in the process that runs them. A cancel event and a scheduler do not
apply: the computation is the caller's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.utils import SerializableLock

from ..errors import AlreadyComputedError, SettingsError
from ..plan import ExportPlan
from ..remote import is_url
from ..storage import create_new, new_token, temp_path
from .job import ExportJob, check_local, commit, open_job
from .results import ExportResult, Progress, ProgressCallback, make_result


@dataclasses.dataclass(frozen=True)
class _Mark:
    """The mark of a ``compute=False`` export not computed yet, and the output it names."""

    path: Path
    output: str

    def check(self) -> None:
        """Refuse to compute an export whose mark is gone: it committed already (or another
        export of its output removed its temporary output)."""
        if not self.path.exists():
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


def refuse_lazy_options(scheduler: Any, cancel: Any, resume: bool) -> None:
    """Refuse, before planning, the options ``compute=False`` does not take (module docs)."""
    given = [n for n, v in (("scheduler", scheduler), ("cancel", cancel)) if v is not None]
    if given:
        raise SettingsError(
            f"compute=False exports take no {' and '.join(given)}: the computation is the "
            "caller's (dask.compute with its own scheduler, stopped as it stops)"
        )
    if resume:
        raise SettingsError(
            "compute=False exports do not resume; export with compute=True and resume=True"
        )


def refuse_lazy_outputs(plans: list[ExportPlan]) -> None:
    """Refuse outputs at a URL, before any plan's job is prepared (module docs)."""
    for plan in plans:
        if is_url(plan.output):
            raise SettingsError(
                f"compute=False exports write local outputs; export to {plan.output} with "
                "compute=True"
            )


def export_lazily(
    plan: ExportPlan, overwrite: bool = False, progress: ProgressCallback | None = None
) -> Any:
    """``plan``'s export as a ``dask.delayed`` object: computing it writes every block and
    then commits (the atomic finish), and returns the :class:`ExportResult` (see the module
    docs; :func:`refuse_lazy_outputs` first)."""
    job, mark = _prepare(plan, overwrite)
    data = plan.result.data.rechunk(plan.blocks)  # one task per planned block, as writers expect
    lock = SerializableLock() if plan.writer.capabilities.single_writer else None
    counter = _Counter(plan, progress, 0)
    offsets = [np.cumsum((0, *c)) for c in data.chunks]
    # unoptimized: optimizing the array graph here would fuse each read of a source chunk into
    # this export's tasks, and exports computed together could not share it
    blocks = data.to_delayed(optimize_graph=False)
    # opaque: dask would traverse the dataclass and make its plan's arrays every task's input
    # (named by the job's token: dask need not hash the open target)
    opened = dask.delayed(job, name=f"lazyexport-job-{job.token}", traverse=False)
    store = dask.delayed(_store_block, pure=False)
    written = []
    for index in np.ndindex(*blocks.shape):
        where = tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, index))
        written.append(store(blocks[index], where, opened, lock, mark, counter))
    return dask.delayed(_commit_lazily, pure=False)(written, opened, mark)


def _prepare(plan: ExportPlan, overwrite: bool) -> tuple[ExportJob, _Mark]:
    """The job of a ``compute=False`` export, with its mark made."""
    token = new_token()  # not registered as running
    check_local(plan, token, overwrite)
    job = open_job(plan, token, False)
    mark = _Mark(
        temp_path(plan.paths[0], token, "lazy"), f"{plan.output}/{plan.internal}".rstrip("/")
    )
    try:
        os.close(create_new(mark.path))
    except BaseException:
        job.target.abort()
        raise
    job.target.scratch.append(mark.path)  # the commit removes it with the temporaries
    return job, mark


def _store_block(
    block: np.ndarray,
    where: tuple[slice, ...],
    job: ExportJob,
    lock: Any,
    mark: _Mark,
    counter: _Counter,
) -> float:
    """Write one block; return when its writing started (wall clock: tasks may run anywhere)."""
    mark.check()
    started = time.time()
    with lock if lock is not None else contextlib.nullcontext():
        job.target.write(block, where)
    counter.add(block)
    return started


def _commit_lazily(written: list[float], job: ExportJob, mark: _Mark) -> ExportResult:
    """Commit once every block is written; the result's time runs from the first block's
    start (not from when the graph was built)."""
    mark.check()
    first = min(written, default=time.time())
    paths = commit(job)
    # the time the blocks took on the wall clock, as a perf_counter start for make_result
    return make_result(job.plan, paths, time.perf_counter() - (time.time() - first), False)
