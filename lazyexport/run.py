"""Execute a plan: schedule block writes, report progress, cancel, finish atomically.

Every block of the planned result is computed and handed to the writer's target by one task
(:class:`BlockJob`), so reading, transforming and writing a block happen together and no block
is kept once written. An executor (:mod:`lazyexport.execution.executors`) submits the tasks in
a bounded window, at most ``plan.in_flight`` at a time (on a cluster, per worker).
Outputs are written under temporary names and renamed only when every block succeeded; on
any failure or cancellation (Ctrl-C included) the temporary output is removed — unless the
export was asked to resume (``resume=True``, formats that can: see :mod:`lazyexport.resume`),
which keeps it with a journal of the finished blocks, and skips those blocks the next time.

An export is one :class:`lazyexport.execution.job.ExportJob` (token, checks, target, journal,
commit), run here by an executor or, with ``compute=False``, as a dask graph
(:mod:`lazyexport.execution.lazy`), wherever the output is: Zarr in an object store is written in
place, a format that edits files is staged and uploaded there (:mod:`lazyexport.execution.staging`).
This module keeps the public names of :mod:`lazyexport.execution` importable from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from . import cost, interrupt, remote
from .blocks import BlockGrid, BlockSource
from .errors import ExportCancelled, OutputBusyError, SchedulerError
from .execution.job import ExportJob, check_outputs, commit, open_job
from .execution.lazy import export_lazily, refuse_lazy_options, refuse_lazy_outputs
from .execution.preflight import (
    beside_outputs,
    clean_outputs,
    location_error,
    remove_empty,
    storage_said,
)
from .execution.progress import WorkCounter
from .execution.regions import (
    MAX_SHARED_UNITS,
    MIN_SHARING,
    RegionPlans,
    RegionResults,
    in_region,
    plan_exports,
    plan_regions,
)
from .execution.results import (
    Conversions,
    ExportResult,
    NamedProgress,
    Progress,
    ProgressCallback,
    export_notes,
    make_result,
)
from .execution.schedulers import (
    CONNECT_TIMEOUT,
    LOCAL_SCHEDULERS,
    PAUSE_MARGIN,
    STOP_TIMEOUT,
    cluster_workers,
    executor_for,
    plan_on,
    scheduler_name,
    stop_writes,
    writing,
)
from .execution.staging import execute_staged, stages
from .heap import reusing_freed_memory
from .plan import WORKER_ALLOWANCE, ZARR_CONCURRENCY, ExportPlan, parse_memory_limit
from .resume import Journal, commit_record, owner_paths, plan_token
from .settings import ExportSettings
from .storage import (
    Busy,
    Run,
    claim,
    finish_commit,
    leftovers,
    new_token,
    release,
    remove,
    temp_path,
)
from .storage.capabilities import can_rename
from .storage.targets import refuse_links_beside, remove_mark
from .transforms import counted

__all__ = [  # what other modules and the tests import from here
    "CONNECT_TIMEOUT",
    "LOCAL_SCHEDULERS",
    "MAX_SHARED_UNITS",
    "MIN_SHARING",
    "PAUSE_MARGIN",
    "STOP_TIMEOUT",
    "Conversions",
    "ExportResult",
    "NamedProgress",
    "Progress",
    "ProgressCallback",
    "RegionPlans",
    "RegionResults",
    "clean_outputs",
    "cluster_workers",
    "execute",
    "executor_for",
    "export",
    "export_lazily",
    "export_notes",
    "export_regions",
    "plan_on",
    "plan_regions",
    "run_plans",
    "scheduler_name",
    "scheduler_session",
]
_stop_writes = stop_writes  # the tests' name for it


@dataclasses.dataclass(frozen=True)
class _Encoded:
    """What a write task of a single-writer target returns: the block's index and what the
    target's ``store`` writes (in the process that runs the export); ``counts``: what the
    conversion clipped and mapped (:data:`lazyexport.transforms.COUNT_NAMES`)."""

    index: tuple[int, ...]
    payload: Any
    counts: tuple[int, ...] = (0, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class _Written:
    """What a write task returns: the block's index, the bytes written and what the conversion
    clipped and mapped."""

    index: tuple[int, ...]
    nbytes: int
    counts: tuple[int, ...] = (0, 0, 0, 0)


class BlockJob:
    """One export's block task: compute block ``index`` (:class:`lazyexport.blocks.BlockSource`)
    and write it into the target (or, for a single-writer target run in other processes, encode
    it for the exporting process to store). Picklable: sent once to each process or worker."""

    def __init__(
        self, plan: ExportPlan, target, journal: Journal | None, run: str, encode_only: bool
    ):
        self.grid = BlockGrid(plan.edges)
        self.source = BlockSource(plan)
        self.target, self.journal, self.run, self.encode_only = target, journal, run, encode_only

    def __call__(self, index: tuple[int, ...]) -> _Written | _Encoded:
        location = self.grid.region(index)
        with counted() as counts:
            block = self.source.compute(location)
        done = _write_block(
            block,
            location,
            index,
            self.target,
            None if self.encode_only else self.journal,
            self.run,
            self.encode_only,
        )
        return dataclasses.replace(done, counts=tuple(int(c) for c in counts))


def _write_block(
    block: np.ndarray,
    location: tuple[slice, ...],
    index: tuple[int, ...],
    target,
    journal: Journal | None = None,
    run: str = "",
    encode_only: bool = False,
):
    """Write (or encode) one computed block, unless its run was stopped meanwhile."""
    with writing(run):
        if encode_only:
            return _Encoded(index, target.encode(block, location))
        written = target.write(block, location)
    if journal is not None:
        journal.record(index)
    return _Written(index, int(written))


class _Tracker:
    """Counts finished block tasks for progress, stores what single-writer tasks encoded, and
    stops the run when cancelled; counts the target's finishing work too (``finishing``: what
    :meth:`Target.finish` reports) and says when the commit is done (``work.committed``)."""

    def __init__(
        self,
        plan: ExportPlan,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        target,
        journal: Journal | None,
        skipped: AbstractSet[tuple[int, ...]] = frozenset(),
    ):
        self.cancel, self.target, self.journal = cancel, target, journal
        grid = BlockGrid(plan.edges)
        self.counts = np.zeros(4, dtype=np.int64)  # see _Written.counts
        self.itemsize = plan.dtype.itemsize
        # blocks an interrupted run finished count as done
        done = sum(grid.size(index) for index in skipped) * self.itemsize
        finishing = target.finishing_work() * self.itemsize
        self.work = WorkCounter(
            progress, (len(skipped), plan.nblocks), (done, plan.nbytes), finishing
        )

    def check(self) -> None:
        interrupt.check()  # a Ctrl-C or SIGTERM of the command that Python lost
        if self.cancel is not None and self.cancel.is_set():
            raise ExportCancelled("export cancelled")

    def finished(self, result: _Written | _Encoded) -> None:
        """Account for one finished block task (storing its block first for single-writer
        targets)."""
        if isinstance(result, _Encoded):
            written = self.target.store(result.payload)
            if self.journal is not None:
                self.journal.record(result.index)
        else:
            written = result.nbytes
        self.counts += np.asarray(result.counts, dtype=np.int64)
        self.work.block(written)

    def finishing(self, pixels: int) -> None:
        """Account for ``pixels`` read by the target's finishing work; a cancelled run stops
        there (ExportCancelled in the finishing work: nothing is committed)."""
        self.check()
        self.work.finishing(pixels * self.itemsize)


@contextlib.contextmanager
def scheduler_session(scheduler: Any, memory_limit: Any = None) -> Iterator[Any]:
    """Resolve ``scheduler`` for one or more exports: yields a local scheduler's name or a
    ``distributed.Client``. An address gets a client connected for the session, and
    ``local-cluster`` a LocalCluster started for it (one single-threaded worker per core, each
    with room for all of ``memory_limit`` + WORKER_ALLOWANCE for its interpreter under
    distributed's pause threshold, as a plan may give one worker a task the size of the whole
    budget; the plan keeps all workers together within ``memory_limit``); both are closed
    afterwards. A client passed in is used as it is (and left open)."""
    resolved = scheduler_name(scheduler)
    if not isinstance(resolved, str) or resolved in ("threads", "synchronous", "processes"):
        yield resolved
        return
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if resolved == "local-cluster":
            count = os.cpu_count() or 1
            room = parse_memory_limit(memory_limit) + WORKER_ALLOWANCE
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    memory_limit=int(room / PAUSE_MARGIN),
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
        else:
            client = stack.enter_context(_connect(resolved))
        yield client


def _connect(address: str):
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchedulerError(
            f"cannot reach a dask scheduler at {address} within {CONNECT_TIMEOUT:g} s ({first})"
        ) from None


def _write_all(
    plan: ExportPlan,
    target,
    journal: Journal | None,
    done: set[tuple[int, ...]],
    scheduler: Any,
    tracker: _Tracker,
) -> Conversions | None:
    """Write every block of ``plan`` not in ``done`` into ``target`` with ``scheduler`` (a local
    scheduler's name or a distributed.Client), a bounded window of block tasks at a time,
    counted by ``tracker``; return what converting to an integer type did (None where the
    export converts to none)."""
    # other processes must not write a single-writer target: they encode, this process stores
    encode_only = plan.writer.capabilities.single_writer and scheduler not in (
        "threads",
        "synchronous",
    )
    run = uuid.uuid4().hex
    job = BlockJob(plan, target, journal, run, encode_only)
    if scheduler in ("threads", "synchronous"):
        job.source.share(skip=done)  # the tasks are this process's threads: they share read units
    indices = (i for i in job.grid.indices() if i not in done) if done else job.grid.indices()
    # zarr decodes up to async.concurrency chunks at once per read: keep that memory bounded
    # the tasks are this process's threads, each writing its own blocks: a freed block is kept
    # for the next (lazyexport.heap); not where this thread stores what they encoded (a single
    # writer), as blocks freed in another thread than their own were kept beside new ones
    keep = scheduler in ("threads", "synchronous") and not plan.writer.capabilities.single_writer
    here = reusing_freed_memory() if keep else contextlib.nullcontext()
    with zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}), here:
        executor_for(plan, scheduler, run).run(indices, job, tracker.finished, tracker.check)
    if plan.settings.dtype is None or plan.dtype.kind not in "iu":
        return None
    below, above, nan, inf = (int(c) for c in tracker.counts)
    return Conversions(str(plan.dtype), below, above, nan, inf, partial=bool(done))


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
    same plan continues it (or finishes its interrupted commit); other formats export from the
    start (and clean up as usual). Before it starts, an export removes what killed exports left
    beside the same outputs (see :mod:`lazyexport.storage`)."""
    if stages(plan):  # a format that edits files, at a place without files: staged, uploaded
        with Run(token := new_token()):
            return execute_staged(_engine, plan, token, overwrite, progress, scheduler, cancel)
    resumable = resume and plan.writer.capabilities.resumable
    token = plan_token(plan) if resumable else new_token()
    owners = owner_paths(plan, token) if resumable else []
    if resumable:  # its names are a hash of the plan: anyone could have planted a link at one
        refuse_links_beside(plan.paths, token)
    # the run is registered first: a record naming this process is alive from its first moment
    with storage_said(plan), Run(token):
        try:
            claim(owners, token)
        except Busy as exc:
            raise OutputBusyError(
                f"another --resume export of {plan.output} runs now ({exc}); wait for it to end"
            ) from None
        try:
            return _execute(plan, token, resumable, overwrite, progress, scheduler, cancel, resume)
        finally:
            release(owners)


def _execute(
    plan: ExportPlan,
    token: str,
    resumable: bool,
    overwrite: bool,
    progress: ProgressCallback | None,
    scheduler: Any,
    cancel: threading.Event | None,
    resume: bool,
) -> ExportResult:
    start = time.perf_counter()
    record = commit_record(plan, token) if resumable else None
    if record is not None:  # an interrupted run of this plan wrote everything: finish its renames
        paths = finish_commit(record)
        for found in leftovers(*beside_outputs(plan)):
            if found.token == token and found.kind != "owner":  # its journal, staging file
                remove(found.path)
        return make_result(plan, paths, start, resume)
    existing, finished = check_outputs(plan, token, overwrite, resumable)
    if finished:  # an interrupted run committed it in place: only its clean-up was left
        remove_mark(temp_path(plan.paths[0], token, "lazy"))  # (as _run_job)
        return make_result(plan, existing, start, True)
    if existing and not can_rename(plan.output):  # nothing swaps it at the end: it goes now
        plan.writer.delete(plan.spec)
    with scheduler_session(scheduler) as resolved:
        if not isinstance(resolved, str):  # cluster workers may run in other directories
            plan = dataclasses.replace(
                plan, output=plan.output.absolute(), paths=tuple(p.absolute() for p in plan.paths)
            )
        job = open_job(plan, token, resumable)
        paths, conversions = _run_job(job, resolved, progress, cancel)
    measured = isinstance(resolved, str) and resolved != "processes"
    return make_result(plan, paths, start, resume, measured, conversions)


def _run_job(
    job: ExportJob,
    scheduler: Any,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> tuple[list[Path], Conversions | None]:
    """Write ``job``'s blocks with ``scheduler`` and commit; a failure removes the temporary
    output (a resumable job keeps it with its journal; past the commit point the commit is
    finished) and is said in the user's terms where the output's place caused it."""
    try:
        cost.reset_peak()
        tracker = _Tracker(job.plan, progress, cancel, job.target, job.journal, job.done)
        conversions = _write_all(job.plan, job.target, job.journal, job.done, scheduler, tracker)
        job.target.report = tracker.finishing
        paths = commit(job)
        tracker.work.committed()
    except BaseException as exc:
        record = commit_record(job.plan, job.token)
        if record is not None:  # past the commit point: every temporary is complete
            with contextlib.suppress(OSError):  # else the next export or `clean` finishes it
                finish_commit(record)
        elif job.journal is None:
            with contextlib.suppress(Exception):  # else the next export or `clean` removes it
                job.target.abort()
            remove_empty(job.made)
        else:
            job.target.close()  # keep the temporary output and the journal for the next run
        mistake = location_error(job.plan, exc, kept=job.journal is not None)
        if mistake is not None:
            raise mistake from None
        raise
    if job.journal is not None:
        job.journal.remove()
        # a compute=False export of this plan that an interruption left is done now: computing
        # it again is refused (execution.lazy), not a second export
        remove_mark(temp_path(job.plan.paths[0], job.token, "lazy"))
    return paths, conversions


def _engine(*args: Any) -> ExportResult:
    """:func:`_execute` for staged exports (:mod:`.execution.staging`), looked up when called,
    so a test's replacement of it applies there too."""
    return _execute(*args)


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
    storage_options: Mapping[str, Any] | None = None,
    compute: bool = True,
) -> Any:
    """Export ``source`` with ``settings``, block by block, within ``memory_limit``.

    The output appears at its final path only when complete; a failed, cancelled or killed
    export leaves nothing there (docs/usage.md, "Temporary files, commits and lazyexport clean").

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array or xarray.DataArray
        What to export: a path :func:`lazyexport.open_source` opens (``file.h5/dataset``,
        ``store.zarr``, ``file.tif``, a glob of slices, ...) or an array.
    settings : ExportSettings, optional
        The cutout, transformations and output; default: the whole source, unchanged, as HDF5
        next to it.
    nickname : str, optional
        The ``{nickname}`` of the output template; default: the source file's name.
    overwrite : bool, default False
        Replace an existing output; without it an existing output is refused.
    memory_limit : int or str, optional
        What the export may add to the process's memory (bytes, or text like ``"512MiB"``);
        default 1 GiB. On a dask cluster: what it may add on all workers together.
    scheduler : str or distributed.Client, optional
        ``"threads"`` (default), ``"synchronous"``, ``"processes"``, ``"local-cluster"``, a
        scheduler address, or a ``distributed.Client`` (used as it is and left open).
    progress : callable, optional
        Called with a :class:`Progress` after every block.
    cancel : threading.Event, optional
        Set it to stop the export; its temporary output is removed (kept with ``resume``).
    resume : bool, default False
        For formats that can resume (zarr, tiff-sequence, png-sequence): continue the temporary
        output an interrupted ``resume=True`` export of the same plan kept, and keep this one's
        if it is interrupted. Other formats export from the start, with a note.
    storage_options : mapping, optional
        Options of the object stores a source or output URL names (``endpoint``, ``region``,
        ``max_retries``, ...; see docs/storage.md), on top of the cloud's environment variables.
    compute : bool, default True
        False: plan and open the output now (the same export job and checks), and return a
        ``dask.delayed`` object that writes it (commit included) when computed, giving the
        ExportResult; several of them (and other work) computed in one ``dask.compute`` call
        read their shared source chunks once. ``progress`` applies (reported where the blocks
        run); ``scheduler`` and ``cancel`` do not (the computation is the caller's). With
        ``resume=True`` the computation claims the output as ``compute=True`` does and
        continues an interrupted export; at a URL, Zarr and OME-Zarr outputs only
        (docs/usage.md, "In a bigger dask graph").

    Returns
    -------
    ExportResult or dask.delayed.Delayed
        What was written: the paths, shape, dtype, axes, bytes, time, notes, what the
        conversion clipped, and the measured and projected peak memory (with ``compute=False``:
        a Delayed that gives it).

    Raises
    ------
    ExportError
        For bad input or a refused action (an existing output without ``overwrite``, an output
        that holds the source, a memory limit no plan fits, ...); see docs/errors.md.
    ExportCancelled
        When ``cancel`` was set.
    """
    if not compute:
        refuse_lazy_options(scheduler, cancel)
    with remote.options(storage_options), scheduler_session(scheduler, memory_limit) as resolved:
        jobs = plan_exports(
            source, settings, resolved, nickname, memory_limit, overwrite, resume, not compute
        )
        if not compute:
            refuse_lazy_outputs(jobs.plans, jobs.existing if resume else [])
            return jobs.outcome(
                [export_lazily(p, overwrite, progress, resume, _engine) for p in jobs.plans]
            )
        each = (lambda _, event: progress(event)) if progress is not None else None
        return jobs.outcome(run_plans(jobs, overwrite, each, resolved, cancel, resume))


def export_regions(
    source: Any,
    settings: ExportSettings,
    *,
    nickname: str | None = None,
    overwrite: bool = False,
    memory_limit: Any = None,
    scheduler: Any = None,
    progress: NamedProgress | None = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
    before: Callable[[str, ExportPlan], None] | None = None,
) -> RegionResults:
    """Export each of ``settings.regions`` (see :mod:`lazyexport.regions`), planned and checked
    by :func:`plan_regions` first; then the regions run one after the other (ordered by
    position, so overlapping ones run close together), sharing the reads of source chunks
    several of them read. With ``resume``, a region whose output exists is left as it is and
    an interrupted one continues. ``progress(name, event)`` as a batch's; ``before(name,
    plan)`` is called as each region starts."""
    with scheduler_session(scheduler, memory_limit) as resolved:
        regions = plan_regions(
            source, settings, resolved, nickname, memory_limit, overwrite, resume
        )
        return run_plans(regions, overwrite, progress, resolved, cancel, resume, before)


def run_plans(
    regions: RegionPlans,
    overwrite: bool,
    progress: NamedProgress | None,
    scheduler: Any,
    cancel: threading.Event | None,
    resume: bool,
    before: Callable[[str, ExportPlan], None] | None = None,
) -> RegionResults:
    """Run the plans of an export one after the other (ordered by position, so overlapping
    regions run close together), on ``scheduler`` as :func:`scheduler_session` yields it."""
    results: dict[str, ExportResult] = {}
    dims = list(regions.boxes[0]) if regions.boxes else []
    order = sorted(range(len(regions.plans)), key=lambda i: [regions.boxes[i][d] for d in dims])
    for i in order:
        name, plan = regions.names[i], regions.plans[i]
        if name not in regions.existing:
            if before is not None:
                before(name, plan)
            each = (lambda event, name=name: progress(name, event)) if progress else None
            with in_region(name, written=list(results)):
                results[name] = execute(
                    plan, overwrite=overwrite, progress=each, scheduler=scheduler,
                    cancel=cancel, resume=resume,
                )  # fmt: skip
        if regions.shared is not None:
            regions.shared.done(i)
    shared = regions.shared
    return RegionResults(
        {name: results[name] for name in regions.names if name in results},
        kept=regions.existing,
        shared_units=shared.shared if shared is not None else 0,
        read_again=shared.again if shared is not None else 0,
        sharing=regions.sharing,
    )
