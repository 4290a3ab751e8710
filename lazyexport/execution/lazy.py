"""``compute=False``: an :class:`~.job.ExportJob`'s preparation, block writes and commit as a
dask graph.

Making the graph checks what can be checked again (an existing output without ``overwrite``,
the output's directory) and makes one thing: the export's *mark*, an empty hidden file (an
object, at a URL) beside the output, named by the export's token. Everything else happens when
the graph is computed, in its tasks: the first task prepares the job as ``compute=True`` does
(a ``--resume`` export's atomic ownership claim; what killed exports left; the overwrite of an
existing output; the opened target, with the journal of what interrupted runs finished); each
block task writes one of the plan's blocks (the same blocks ``compute=True`` writes), skipping
those the journal lists; the last task commits, removes the mark and ends the claim. The graph
reads the source through its own dask keys, so exports of one source computed together read
each source chunk once. The export is handed to the tasks opaquely (not traversed by dask):
otherwise the plan's source and result arrays inside it would become dependencies of every task,
and every lazy export would compute the whole source, whatever its cutout.

Every task checks the mark, and the commit removes it, so computing the Delayed twice (in any
process) raises AlreadyComputedError and leaves the output as it is. A computation that fails
leaves the temporary output (a ``--resume`` export: with its journal), for the next export of
the output (or ``lazyexport clean``). A ``--resume`` export's claim is ended by its commit, or,
when a local dask scheduler's computation fails in the process that made the claim, once no
block write of it is under way any more (:class:`_Releaser`, no later write starts); otherwise
(worker processes, a cluster) the process that ran the first task holds it while it lives.

Outputs at a URL that are staged locally and uploaded (HDF5, also a dataset added into an
existing file; TIFF, image sequences, npy, ...) are one task after the graph's mark: it runs the
whole staged export through the code ``compute=True`` runs for it
(:func:`~.staging.execute_staged`, with threads inside the task; it does not resume),
so the staging directory is made, filled, uploaded and removed within that task, in one process;
then it removes the mark. Nothing is staged, fetched, claimed or uploaded before the computation.

Storage options are captured when the graph is made (never shown: :class:`_Options`) and put in
effect in the tasks that open stores (process-wide: such tasks run one at a time in a process,
a staged export's task for all of its export). Refused (one line): ``resume=True`` with regions
whose output exists already. Progress is reported by the tasks, in the process that runs them.
A cancel event and a scheduler do not apply: the computation is the caller's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.callbacks import Callback
from dask.utils import SerializableLock

from .. import remote
from ..errors import AlreadyComputedError, ExportCancelled, OutputBusyError, SettingsError
from ..plan import ExportPlan
from ..resume import commit_record, owner_paths, plan_token
from ..storage import Busy, Run, claim, finish_commit, leftovers, new_token, release, temp_path
from ..storage import remove as remove_file
from ..storage.capabilities import can_rename
from ..storage.targets import has_mark, make_mark, refuse_links_beside, remove_mark
from .job import ExportJob, check_outputs, commit, open_job
from .preflight import beside_outputs, check_location, refuse_existing
from .results import ExportResult, Progress, ProgressCallback, make_result
from .staging import Engine, execute_staged

# storage options are process-wide (remote.options): tasks that set them do so one at a time
_OPTIONS_LOCK = threading.Lock()


class _Options:
    """Storage options captured for the tasks; their values are never shown."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def __repr__(self) -> str:
        return f"<storage options: {', '.join(sorted(self.values)) or 'none'}>"

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with _OPTIONS_LOCK, remote.options(self.values):
            yield


@dataclasses.dataclass(frozen=True, repr=False)
class _Lazy:
    """One ``compute=False`` export as its tasks see it: the plan, the job's token, the mark
    beside the output (made with the graph; the commit removes it) and the storage options."""

    plan: ExportPlan
    token: str
    resumable: bool
    overwrite: bool
    mark: Path
    at_url: bool
    options: _Options

    def __repr__(self) -> str:
        return f"<compute=False export of {self.output} ({self.token})>"

    @property
    def output(self) -> str:
        return f"{self.plan.output}/{self.plan.internal}".rstrip("/")

    def check(self) -> None:
        """Refuse to compute an export whose mark is gone: it committed already (or another
        export of its output removed its temporary output)."""
        if not has_mark(self.mark, self.options.values):
            raise AlreadyComputedError(
                f"this compute=False export of {self.output} was computed already (it commits "
                "once, so its output is left as it is), or another export of the same output "
                "removed its temporary output; call export(..., compute=False) again for a new one"
            )


@dataclasses.dataclass
class _Prepared:
    """What the first task made: the open job (None: an interrupted commit was finished, with
    ``paths``), and the claim to end with the commit (its owner records, wherever the output is).
    In the process that made it, it counts the block writes under way, so that a failed
    computation can end the claim once none is (:class:`_Releaser`)."""

    job: ExportJob | None
    paths: list[Path] = dataclasses.field(default_factory=list)
    owners: list[Path] = dataclasses.field(default_factory=list)
    key: str = ""  # the first task's, for a --resume export's claim (_CLAIMED)

    def __post_init__(self) -> None:
        self.lock, self.writes, self.stopped = threading.Lock(), 0, False

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One block write; refused once the computation failed and the claim may end."""
        with self.lock:
            if self.stopped:
                raise ExportCancelled(_STOPPED)
            self.writes += 1
        try:
            yield
        finally:
            with self.lock:
                self.writes -= 1

    def stop(self, lazy: _Lazy) -> None:
        """After a failed computation: refuse further writes, wait for those under way (up to
        STOP_WAIT seconds), then keep the temporary output and journal and end the claim. A
        write still under way then keeps the claim (this process holds it while it lives)."""
        with self.lock:
            self.stopped = True
        deadline = time.monotonic() + STOP_WAIT
        while self.writes and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.writes:
            return
        with lazy.options.active():
            if self.job is not None:
                with contextlib.suppress(Exception):
                    self.job.target.close()
            _release(self, lazy)


# how long a failed computation waits for its block writes under way before it ends the claim
STOP_WAIT = 60.0

# the --resume exports prepared in this process and not committed: their first task's key ->
# (the export, what the task made); see _Releaser
_CLAIMED: dict[str, tuple[_Lazy, _Prepared]] = {}
# the first tasks of computations that failed here: one still under way ends its claim itself
_FAILED: set[str] = set()
_PREPARING: set[str] = set()  # the first tasks under way in this process
_CLAIMED_LOCK = threading.Lock()
_PREPARE = "lazyexport-prepare-"
_STOPPED = "this compute=False export stopped: a task of its computation failed"


class _Releaser(Callback):
    """Ends the claims of ``--resume`` exports whose computation by a local dask scheduler
    (synchronous, threads) failed or was interrupted in this process, so that the next export
    (lazy or not, in this process too) can resume. On other processes or a cluster the claim is
    held by the process that ran the first task, while it lives."""

    def _start(self, dsk: Any) -> None:
        if _FAILED:
            with _CLAIMED_LOCK:
                _FAILED.difference_update([key for key in _FAILED if key in dsk])

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if not errored:
            return
        with _CLAIMED_LOCK:
            failed = [_CLAIMED.pop(key) for key in list(_CLAIMED) if key in dsk]
            # first tasks not started yet refuse to; those under way (in a thread of the pool)
            # end their claim as they end: wait for them
            firsts = {k for k in dsk if isinstance(k, str) and k.startswith(_PREPARE)}
            _FAILED.update(firsts)
        for lazy, prepared in failed:
            prepared.stop(lazy)
        deadline = time.monotonic() + STOP_WAIT
        while _PREPARING & firsts and time.monotonic() < deadline:
            time.sleep(0.01)


_RELEASER = _Releaser()


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


def refuse_lazy_options(scheduler: Any, cancel: Any) -> None:
    """Refuse, before planning, the options ``compute=False`` does not take (module docs)."""
    given = [n for n, v in (("scheduler", scheduler), ("cancel", cancel)) if v is not None]
    if given:
        raise SettingsError(
            f"compute=False exports take no {' and '.join(given)}: the computation is the "
            "caller's (dask.compute with its own scheduler, stopped as it stops)"
        )


def refuse_lazy_outputs(plans: list[ExportPlan], kept: list[str]) -> None:
    """Refuse, before any plan's mark is made, regions ``kept`` (their output exists, with
    ``resume``): see the module docs."""
    if kept:
        raise SettingsError(
            f"the output of region {kept[0]} exists already; compute=False exports with "
            "resume=True do not keep regions: export them with compute=True"
        )


def export_lazily(
    plan: ExportPlan,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    engine: Engine | None = None,
) -> Any:
    """``plan``'s export as a ``dask.delayed`` object: computing it prepares the job, writes
    every block and then commits (the atomic finish), and returns the :class:`ExportResult`
    (see the module docs; :func:`refuse_lazy_outputs` first). An output at a URL that is
    staged needs ``engine``, the block writes ``compute=True`` uses (:mod:`lazyexport.run`'s)."""
    staged = _at_url(plan) and not plan.writer.capabilities.object_store
    if staged and engine is None:
        raise SettingsError(
            f"{plan.output} is staged and uploaded: export it with lazyexport.export"
        )
    lazy = _made(plan, overwrite, resume)
    if staged:
        export = dask.delayed(lazy, name=f"lazyexport-export-{lazy.token}", traverse=False)
        return dask.delayed(_export_staged, pure=False)(export, engine, progress)
    if lazy.resumable and _RELEASER._callback not in Callback.active:
        _RELEASER.register()  # (a computation under way takes the callbacks from its start)
    data = plan.result.data.rechunk(plan.blocks)  # one task per planned block, as writers expect
    lock = SerializableLock() if plan.writer.capabilities.single_writer else None
    counter = _Counter(plan, progress, 0)
    offsets = [np.cumsum((0, *c)) for c in data.chunks]
    # unoptimized: optimizing the array graph here would fuse each read of a source chunk into
    # this export's tasks, and exports computed together could not share it
    blocks = data.to_delayed(optimize_graph=False)
    # opaque: dask would traverse the dataclass and make its plan's arrays every task's input
    # (named by the job's token: dask need not hash the plan)
    export = dask.delayed(lazy, name=f"lazyexport-export-{lazy.token}", traverse=False)
    key = f"{_PREPARE}{uuid.uuid4().hex}"
    prepared = dask.delayed(_prepare, pure=False)(export, key, dask_key_name=key)
    store = dask.delayed(_store_block, pure=False)
    written = []
    for index in np.ndindex(*blocks.shape):
        where = tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, index))
        written.append(store(blocks[index], where, index, prepared, export, lock, counter))
    return dask.delayed(_commit_lazily, pure=False)(written, prepared, export)


def _made(plan: ExportPlan, overwrite: bool, resume: bool) -> _Lazy:
    """The export as its tasks see it, checked (checks the first task makes again) and with its
    mark made (see the module docs)."""
    at_url = _at_url(plan)
    caps = plan.writer.capabilities
    resumable = resume and caps.resumable and (caps.object_store or not at_url)
    token = plan_token(plan) if resumable else new_token()
    lazy = _Lazy(
        plan,
        token,
        resumable,
        overwrite,
        temp_path(plan.paths[0], token, "lazy"),
        at_url,
        _Options(remote.current_options()),
    )
    try:
        existing = plan.writer.existing(plan.spec)
        if existing and not overwrite and not (resumable and _committing(plan, token, at_url)):
            refuse_existing(plan, existing)
        if not at_url:
            check_location(plan)
            lazy.mark.parent.mkdir(parents=True, exist_ok=True)  # (the directory the mark needs)
        make_mark(lazy.mark)
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, plan.output, "write") from None
        raise
    return lazy


def _at_url(plan: ExportPlan) -> bool:
    """Whether ``plan`` writes into an object store, where nothing is renamed into place (this
    module's one local-or-URL choice: what the tasks do follows from the export's ``at_url``)."""
    return not can_rename(plan.output)


def _committing(plan: ExportPlan, token: str, at_url: bool) -> bool:
    """Whether an interrupted ``--resume`` run of ``plan`` was committing (its output may exist:
    the first task finishes the commit, as ``compute=True`` does)."""
    if at_url:
        return remote.exists(temp_path(plan.output, token))
    return commit_record(plan, token) is not None


@contextlib.contextmanager
def _said(lazy: _Lazy) -> Iterator[None]:
    """A task's storage options, and its storage errors said in the user's terms."""
    try:
        with lazy.options.active():
            yield
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, lazy.plan.output, "write") from None
        raise


def _prepare(lazy: _Lazy, key: str) -> _Prepared:
    """The first task (``key``): check the mark, then prepare the job as ``compute=True``
    does; a ``--resume`` export's claim is recorded for :class:`_Releaser`."""
    with _CLAIMED_LOCK:
        if key in _FAILED:  # its computation failed before it started
            _FAILED.discard(key)
            raise ExportCancelled(_STOPPED)
        _PREPARING.add(key)
    try:
        with _said(lazy):
            lazy.check()
            prepared = _prepare_job(lazy)
        prepared.key = key
        with _CLAIMED_LOCK:
            stopped = key in _FAILED
            _FAILED.discard(key)
            if lazy.resumable and not stopped:
                _CLAIMED[key] = (lazy, prepared)
        if stopped:  # its computation failed meanwhile
            prepared.stop(lazy)
            raise ExportCancelled(_STOPPED)
        return prepared
    finally:
        with _CLAIMED_LOCK:
            _PREPARING.discard(key)


def _busy(lazy: _Lazy, exc: Busy) -> OutputBusyError:
    return OutputBusyError(
        f"another --resume export of {lazy.plan.output} runs now ({exc}); wait for it to end"
    )


def _prepare_job(lazy: _Lazy) -> _Prepared:
    """Claim a ``--resume`` export's ownership (atomically: its owner records, wherever the
    output is), finish an interrupted commit of it, or check the output, replace an existing
    one where nothing is renamed into place (``overwrite``) and open the job (as
    :func:`lazyexport.run.execute`)."""
    plan, token = lazy.plan, lazy.token
    owners = owner_paths(plan, token) if lazy.resumable else []
    if lazy.resumable:  # its names are a hash of the plan: anyone could have planted a link
        refuse_links_beside(plan.paths, token)
    if lazy.resumable:  # registered first: a record naming this process is alive at once
        Run(token).__enter__()
    try:
        claim(owners, token)
    except Busy as exc:
        if lazy.resumable:
            Run(token).__exit__()
        raise _busy(lazy, exc) from None
    try:
        record = commit_record(plan, token) if lazy.resumable else None
        if record is not None:  # an interrupted run wrote everything: finish its renames
            paths = finish_commit(record)
            for found in leftovers(*beside_outputs(plan)):
                if found.token == token and found.kind not in ("owner", "lazy"):
                    remove_file(found.path)
            return _Prepared(None, paths, owners)
        existing, finished = check_outputs(plan, token, lazy.overwrite, lazy.resumable)
        if finished:  # an interrupted run committed it in place: only its clean-up was left
            return _Prepared(None, existing, owners)
        if existing and not can_rename(plan.output):  # nothing swaps it at the end: it goes now
            plan.writer.delete(plan.spec)
        job = open_job(plan, token, lazy.resumable)
    except BaseException:
        _release(_Prepared(None, owners=owners), lazy)
        raise
    return _Prepared(job, owners=owners)


def _release(prepared: _Prepared, lazy: _Lazy) -> None:
    """End a ``--resume`` export's claim (its owner records)."""
    release(prepared.owners)
    if lazy.resumable:
        Run(lazy.token).__exit__()


def _store_block(
    block: np.ndarray,
    where: tuple[slice, ...],
    index: tuple[int, ...],
    prepared: _Prepared,
    lazy: _Lazy,
    lock: Any,
    counter: _Counter,
) -> float | None:
    """Write one block (unless an interrupted run finished it); return when its writing
    started (wall clock: tasks may run anywhere), None where it was not written."""
    job = prepared.job
    if job is None or index in job.done:
        counter.add(block)
        return None
    with prepared.writing():
        lazy.check()
        started = time.time()
        with lock if lock is not None else contextlib.nullcontext():
            job.target.write(block, where)
        if job.journal is not None:
            job.journal.record(index)
    counter.add(block)
    return started


def _commit_lazily(written: list[float | None], prepared: _Prepared, lazy: _Lazy) -> ExportResult:
    """Commit once every block is written, remove the mark and end the claim; the result's
    time runs from the first block's start (not from when the graph was built)."""
    started = [t for t in written if t is not None]
    first = min(started, default=time.time())
    with _said(lazy):
        job = prepared.job
        if job is None:
            paths = prepared.paths
        else:
            lazy.check()
            if not lazy.at_url:
                job.target.scratch.append(lazy.mark)  # removed with the temporaries
            paths = commit(job)
            if job.journal is not None and not lazy.at_url:
                job.journal.remove()
        remove_mark(lazy.mark)
        with _CLAIMED_LOCK:
            _CLAIMED.pop(prepared.key, None)
        _release(prepared, lazy)
    # the time the blocks took on the wall clock, as a perf_counter start for make_result
    start = time.perf_counter() - (time.time() - first)
    return make_result(lazy.plan, paths, start, lazy.resumable)


def _export_staged(lazy: _Lazy, engine: Engine, progress: ProgressCallback | None) -> ExportResult:
    """The one task of an output at a URL that is staged: check the mark, run the export as
    ``compute=True`` does (staged in ``TMPDIR``, uploaded, the staging removed however it
    ends), under the captured storage options, then remove the mark (see the module docs)."""
    with _said(lazy):
        lazy.check()
        with Run(lazy.token):
            result = execute_staged(
                engine, lazy.plan, lazy.token, lazy.overwrite, progress, "threads", None
            )
        remove_mark(lazy.mark)
    return result
