"""Execute a plan: schedule block writes, report progress, cancel, finish atomically.

Every block of the planned result is computed and handed to the writer's target by one task
(:class:`BlockJob`), so reading, transforming and writing a block happen together and no block
is kept once written. An executor (:mod:`lazyexport.executors`) submits the tasks in a bounded
window, at most ``plan.in_flight`` at a time (on a cluster, per worker).
Outputs are written under temporary names and renamed only when every block succeeded; on
any failure or cancellation (Ctrl-C included) the temporary output is removed — unless the
export was asked to resume (``resume=True``, formats that can: see :mod:`lazyexport.resume`),
which keeps it with a journal of the finished blocks, and skips those blocks the next time.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from dask.utils import SerializableLock, format_bytes

from . import cost, interrupt, remote
from .axes import names
from .blocks import BlockGrid, BlockSource
from .errors import (
    AlreadyComputedError,
    ExportCancelled,
    ExportError,
    OutputBusyError,
    OutputExistsError,
    OutputLocationError,
    SchedulerError,
    SettingsError,
    redact,
)
from .executors import Distributed, Executor, Inline, Processes, Threads
from .formats import container
from .plan import (
    MIN_MEMORY_LIMIT,
    WORKER_ALLOWANCE,
    ZARR_CONCURRENCY,
    ExportPlan,
    Workers,
    build_plan,
    parse_memory_limit,
    read_model,
    read_through,
)
from .regions import SharedChunks, check_distinct, region_settings
from .remote import is_url
from .resume import Journal, RemoteJournal, commit_record, open_resumable, owner_paths, plan_token
from .roi import resolve_roi
from .settings import ExportSettings
from .sources import open_source
from .sources.base import release_files
from .sources.facts import attach_facts, source_facts
from .storage import (
    Busy,
    Run,
    claim,
    clean,
    create_new,
    finish_commit,
    leftovers,
    new_token,
    refuse_links,
    remove,
    temp_path,
)
from .transforms import counted


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where an export stands; handed to the ``progress`` callback after every block."""

    blocks_done: int
    blocks_total: int
    bytes_done: int  # uncompressed result bytes written so far
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
    output: Path  # the file / store (sequences: the first slice)
    paths: list[Path]  # every file or directory written
    internal: str  # dataset path inside an HDF5 file / Zarr store ("" if none)
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: tuple[str, ...]
    nbytes: int  # uncompressed size of the exported data
    seconds: float
    notes: tuple[str, ...] = ()
    # measured peak resident memory of this process during the export (0: unknown)
    peak_memory: int = 0
    projected_peak: int = 0  # what the plan projected for it
    conversions: Conversions | None = None  # what converting to an integer type clipped

    @property
    def report(self) -> str:
        """What the conversion did to the values, in one line ("" where nothing converted to an
        integer type)."""
        return str(self.conversions) if self.conversions is not None else ""

    def __repr__(self) -> str:  # no URL's user-info (lazyexport.errors.redact)
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return redact(f"{type(self).__name__}({fields})")

    def __str__(self) -> str:
        where = redact(str(self.output)) + (f"/{self.internal}" if self.internal else "")
        if len(self.paths) > 1:
            where += f" (+{len(self.paths) - 1} more files)"
        rate = self.nbytes / self.seconds / 1e6 if self.seconds else 0.0
        memory = (
            f"; peak memory {format_bytes(self.peak_memory)} (projected "
            f"{format_bytes(self.projected_peak)})"
            if self.peak_memory and self.projected_peak
            else ""
        )
        report = f"\n  {self.report}" if self.report else ""
        return (
            f"wrote {self.format} {where}: {''.join(self.axes)} {self.shape} {self.dtype}, "
            f"{self.nbytes / 1e6:.1f} MB in {self.seconds:.2f} s ({rate:.0f} MB/s){memory}"
            f"{report}"
        )


ProgressCallback = Callable[[Progress], Any]
NamedProgress = Callable[[str, Progress], Any]  # (a dataset's or region's name, progress)
CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler at an address
STOP_TIMEOUT = 120.0  # seconds to wait for a cancelled run's writes to finish on the workers
LOCAL_SCHEDULERS = ("threads", "synchronous", "processes", "local-cluster")

# Writes running in this process, per run, and the runs whose writes must not start any more:
# a cancelled distributed run stops new writes and waits until none of its writes runs on any
# worker before it removes the temporary output (a task that was still reading its block when
# the run was cancelled then writes nothing).
_ACTIVE: collections.Counter[str] = collections.Counter()
_STOPPED: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


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


@dataclasses.dataclass(frozen=True)
class Conversions:
    """What converting to an integer type did to the values an export wrote: values below the
    type's range (clipped to its minimum), above it (clipped to its maximum), NaN (written as
    0), and infinite values (among the clipped). ``partial``: a resumed export counts only the
    blocks it wrote itself."""

    dtype: str
    clipped_below: int = 0
    clipped_above: int = 0
    nan: int = 0
    inf: int = 0
    partial: bool = False

    def __str__(self) -> str:
        info = np.iinfo(self.dtype)
        parts = [
            f"{self.clipped_below} clipped to {info.min}" if self.clipped_below else "",
            f"{self.clipped_above} clipped to {info.max}" if self.clipped_above else "",
            f"{self.nan} NaN written as 0" if self.nan else "",
            f"{self.inf} of them infinite" if self.inf else "",
        ]
        said = ", ".join(p for p in parts if p) or "no value clipped, no NaN"
        scope = " (in the blocks this run wrote)" if self.partial else ""
        return f"converted to {self.dtype}: {said}{scope}"


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
    with _ACTIVE_LOCK:
        if run in _STOPPED:  # cancelled while this task read its block: write nothing
            raise ExportCancelled("export cancelled")
        _ACTIVE[run] += 1
    try:
        if encode_only:
            return _Encoded(index, target.encode(block, location))
        written = target.write(block, location)
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE[run] -= 1
            if not _ACTIVE[run]:
                del _ACTIVE[run]
    if journal is not None:
        journal.record(index)
    return _Written(index, int(written))


def _stop_writes(run: str) -> int:
    """Let no write task of ``run`` start in this process from now on; return how many are
    still running (called on workers)."""
    with _ACTIVE_LOCK:
        _STOPPED.add(run)
        return _ACTIVE[run]


class _Tracker:
    """Counts finished block tasks for progress, stores what single-writer tasks encoded, and
    stops the run when cancelled."""

    def __init__(
        self,
        plan: ExportPlan,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        target,
        journal: Journal | None,
        skipped: AbstractSet[tuple[int, ...]] = frozenset(),
    ):
        self.progress, self.cancel = progress, cancel
        self.target, self.journal = target, journal
        self.total, self.nbytes = plan.nblocks, plan.nbytes
        grid = BlockGrid(plan.edges)
        self.counts = np.zeros(4, dtype=np.int64)  # see _Written.counts
        self.done = len(skipped)  # blocks an interrupted run finished count as done
        self.bytes = sum(grid.size(index) for index in skipped) * plan.dtype.itemsize
        self.start = time.perf_counter()

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
        self.done += 1
        self.bytes += written
        if self.progress is not None:
            self.progress(
                Progress(
                    self.done,
                    self.total,
                    min(self.bytes, self.nbytes),
                    self.nbytes,
                    time.perf_counter() - self.start,
                )
            )


def _wait_writes_stopped(client, run: str) -> None:
    """Stop new writes of ``run`` on every worker and wait (at most STOP_TIMEOUT) until none
    runs any more: cancelling futures does not interrupt tasks already running (reading their
    block, or writing it), and those must not write after the temporary output is removed.
    Twice quiet in a row, for a worker that joins between two looks."""
    deadline = time.monotonic() + STOP_TIMEOUT
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        try:
            busy = client.run(_stop_writes, run, on_error="ignore")
        except Exception:  # the cluster is gone: nothing runs there any more
            return
        quiet = quiet + 1 if not any(busy.values()) else 0
        time.sleep(0.1)


def _is_client(scheduler: Any) -> bool:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(scheduler, Client)


_ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)\S+$|^[\w.-]+:\d+$", re.IGNORECASE)


def scheduler_name(scheduler: Any) -> str | Any:
    """Check ``scheduler`` and return its canonical form: a local scheduler's name, a scheduler
    address, or the ``distributed.Client`` itself. Raises SchedulerError for anything else."""
    if scheduler is None:
        return "threads"
    if _is_client(scheduler):
        return scheduler
    name = str(scheduler).strip().lower() if isinstance(scheduler, str) else None
    aliases = {
        "threads": "threads",
        "threading": "threads",
        "sync": "synchronous",
        "synchronous": "synchronous",
        "single-threaded": "synchronous",
        "processes": "processes",
        "multiprocessing": "processes",
        "local-cluster": "local-cluster",
        "localcluster": "local-cluster",
    }
    if name in aliases:
        return aliases[name]
    if name is not None and _ADDRESS.match(scheduler.strip()):
        return scheduler.strip()
    raise SchedulerError(
        f"unknown scheduler {scheduler!r}; choose {', '.join(LOCAL_SCHEDULERS)}, a scheduler "
        f"address like tcp://host:8786, or (from Python) a distributed.Client"
    )


# distributed pauses a worker whose memory passes 80 % of its limit; plans stay under this part
PAUSE_MARGIN = 0.7


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


def _worker_baseline() -> int:
    """A worker's resident memory once it has imported what block tasks run (so the baseline
    does not leave out the libraries the first task would load)."""
    import lazyexport.blocks  # noqa: F401
    import lazyexport.formats.registry  # noqa: F401

    return cost.process_rss()


def cluster_workers(client: Any, memory_limit: Any = None) -> Workers:
    """What a plan for ``client``'s cluster is sized by (see :class:`lazyexport.plan.Workers`):
    the fewest threads of a worker; what the most constrained worker may add (PAUSE_MARGIN of
    its memory limit less what it holds now, and no more than ``memory_limit``); and what all
    workers together may add: ``memory_limit`` when one is given."""
    info = client.scheduler_info().get("workers", {})
    if not info:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        info = client.scheduler_info().get("workers", {})
    threads = min(int(w.get("nthreads", 1)) for w in info.values())
    # what each worker holds now (the scheduler's metrics lag behind a worker that just started)
    try:
        used = max(client.run(_worker_baseline).values())
    except Exception:  # noqa: BLE001 -- a worker that cannot run it: the scheduler's metrics
        used = max(int(w.get("metrics", {}).get("memory", 0)) for w in info.values())
    limits = [int(w.get("memory_limit") or 0) for w in info.values()]
    limit = min(limits) if all(limits) else 0
    budget = max(int(limit * PAUSE_MARGIN) - used if limit else parse_memory_limit(memory_limit), 0)
    total = parse_memory_limit(memory_limit) if memory_limit is not None else budget * len(info)
    return Workers(
        count=len(info),
        threads=threads,
        budget=min(budget, total),
        baseline=used,
        memory_limit=limit,
        total=total,
    )


def _connect(address: str):
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchedulerError(
            f"cannot reach a dask scheduler at {address} within {CONNECT_TIMEOUT:g} s ({first})"
        ) from None


def executor_for(plan: ExportPlan, scheduler: Any, run: str = "") -> Executor:
    """The executor of ``plan`` on ``scheduler`` (a local scheduler's name or a distributed.Client):
    ``plan.in_flight`` tasks at a time (on a cluster, in all, and on each worker no more than
    the plan gives one)."""
    if scheduler == "synchronous" or (scheduler == "threads" and plan.in_flight <= 1):
        return Threads(1) if scheduler == "threads" else Inline()
    if scheduler == "threads":
        return Threads(plan.in_flight)
    if scheduler == "processes":
        return Processes(plan.in_flight)
    workers = scheduler.scheduler_info().get("workers", {})
    per_worker = max(plan.priced.per_host or plan.in_flight, 1)
    slots = {
        address: max(min(int(info.get("nthreads", 1)), per_worker), 1)
        for address, info in workers.items()
    }
    return Distributed(
        scheduler,
        slots,
        default_slots=1,
        window=plan.in_flight,
        on_stop=lambda: _wait_writes_stopped(scheduler, run),
    )


def _write_all(
    plan: ExportPlan,
    target,
    journal: Journal | None,
    done: set[tuple[int, ...]],
    scheduler: Any,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Conversions | None:
    """Write every block of ``plan`` not in ``done`` into ``target`` with ``scheduler`` (a local
    scheduler's name or a distributed.Client), a bounded window of block tasks at a time; return
    what converting to an integer type did (None where the export converts to none)."""
    # other processes must not write a single-writer target: they encode, this process stores
    encode_only = plan.writer.capabilities.single_writer and scheduler not in (
        "threads",
        "synchronous",
    )
    run = uuid.uuid4().hex
    job = BlockJob(plan, target, journal, run, encode_only)
    if scheduler in ("threads", "synchronous"):
        job.source.share(skip=done)  # the tasks are this process's threads: they share read units
    tracker = _Tracker(plan, progress, cancel, target, journal, skipped=done)
    indices = (i for i in job.grid.indices() if i not in done) if done else job.grid.indices()
    # zarr decodes up to async.concurrency chunks at once per read: keep that memory bounded
    with zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}):
        executor_for(plan, scheduler, run).run(indices, job, tracker.finished, tracker.check)
    if plan.settings.dtype is None or plan.dtype.kind not in "iu":
        return None
    below, above, nan, inf = (int(c) for c in tracker.counts)
    return Conversions(str(plan.dtype), below, above, nan, inf, partial=bool(done))


def export_notes(plan: ExportPlan, resume: bool) -> tuple[str, ...]:
    """The plan's notes, and that ``resume`` does not apply to its format where it does not (such
    an export starts from the beginning): what an export of ``plan`` reports."""
    if resume and not plan.writer.capabilities.resumable:
        return (*plan.notes, f"{plan.writer.name} outputs cannot resume; exported from the start")
    return plan.notes


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
    if is_url(plan.output):
        caps = plan.writer.capabilities
        resumable = resume and caps.resumable and caps.object_store
        with Run(token := plan_token(plan) if resumable else new_token()):
            return _execute_remote(plan, token, resumable, overwrite, progress, scheduler, cancel)
    resumable = resume and plan.writer.capabilities.resumable
    token = plan_token(plan) if resumable else new_token()
    owners = owner_paths(plan, token) if resumable else []
    if resumable:  # its names are a hash of the plan: anyone could have planted a link at one
        refuse_links(_beside_outputs(plan)[0], token)
    try:
        claim(owners, token)
    except Busy as exc:
        raise OutputBusyError(
            f"another --resume export of {plan.output} runs now ({exc}); wait for it to end"
        ) from None
    with Run(token):
        try:
            return _execute(plan, token, resumable, overwrite, progress, scheduler, cancel, resume)
        finally:
            for owner in owners:
                remove(owner)


def _beside_outputs(plan: ExportPlan) -> tuple[set[Path], set[str]]:
    """Where the temporaries of ``plan``'s outputs lie: the directories, and the output names
    they are named after (through a symlinked store too)."""
    paths = [*plan.paths, *(p.resolve() for p in plan.paths)]
    return {p.parent for p in paths}, {p.name for p in paths}


def clean_outputs(plan: ExportPlan, keep: str | None = None, dry_run: bool = False):
    """Remove (or list) what killed exports left beside ``plan``'s outputs: see
    :func:`lazyexport.storage.clean` (at a URL: :func:`lazyexport.remote.clean_beside`, which
    lists nothing)."""
    if is_url(plan.output):
        if not dry_run:
            remote.clean_beside(plan.paths, keep=keep)
        return [], []
    return clean(*_beside_outputs(plan), keep=keep, dry_run=dry_run)


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
        for found in leftovers(*_beside_outputs(plan)):
            if found.token == token and found.kind != "owner":  # its journal, staging file
                remove(found.path)
        return _result(plan, paths, start, resume)
    clean_outputs(plan, keep=token)
    existing = plan.writer.existing(plan.spec)
    if existing and not overwrite:
        _refuse_existing(plan, existing)
    _check_location(plan)
    with scheduler_session(scheduler) as resolved:
        if not isinstance(resolved, str):  # cluster workers may run in other directories
            plan = dataclasses.replace(
                plan, output=plan.output.absolute(), paths=tuple(p.absolute() for p in plan.paths)
            )
        made = _missing_dirs(plan)  # a failed export removes those it made (where empty)
        try:
            if resumable:
                target, journal, done = open_resumable(plan, token)
            else:
                target, journal, done = plan.writer.open(plan.spec, token), None, set()
        except BaseException as exc:
            _remove_empty(made)
            mistake = _location_error(plan, exc, kept=False)
            if mistake is not None:
                raise mistake from None
            raise
        try:
            cost.reset_peak()
            conversions = _write_all(plan, target, journal, done, resolved, progress, cancel)
            release_files(plan.paths)  # a source read from the output's own file (HDF5) must let go
            # a writer's second pass reads too
            if journal is not None:  # removed with the commit, before its record
                target.scratch.append(journal.path)
            with zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}):
                paths = target.commit()
        except BaseException as exc:
            record = commit_record(plan, token)
            if record is not None:  # past the commit point: every temporary is complete
                with contextlib.suppress(OSError):  # else the next export or `clean` finishes it
                    finish_commit(record)
            elif journal is None:
                target.abort()
                _remove_empty(made)
            else:
                target.close()  # keep the temporary output and the journal for the next run
            mistake = _location_error(plan, exc, kept=journal is not None)
            if mistake is not None:
                raise mistake from None
            raise
    if journal is not None:
        journal.remove()
    return _result(
        plan,
        paths,
        start,
        resume,
        measured=isinstance(resolved, str) and resolved != "processes",
        conversions=conversions,
    )


def _execute_remote(
    plan: ExportPlan,
    token: str,
    resumable: bool,
    overwrite: bool,
    progress: ProgressCallback | None,
    scheduler: Any,
    cancel: threading.Event | None,
) -> ExportResult:
    """:func:`execute` for an output at a URL. Zarr and OME-Zarr are written straight to the
    store, the metadata that makes them visible last (see :mod:`lazyexport.remote`); other
    formats are exported to a local staging directory and uploaded on commit. A resumable
    export (Zarr) keeps its held metadata and a journal in the store when interrupted."""
    start = time.perf_counter()
    held = temp_path(plan.output, token)
    try:
        remote.clean_beside(plan.paths, keep=token)
        existing = plan.writer.existing(plan.spec)
        if resumable and existing and remote.exists(held):  # its commit ran, the cleanup did not
            remote.delete_prefix(held)
            return _result(plan, list(existing), start, True)
        if plan.writer.capabilities.object_store and not existing:
            _refuse_foreign_objects(plan, kept=resumable and remote.exists(held))
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, plan.output, "write") from None
        raise
    if existing and not overwrite:
        _refuse_existing(plan, existing)
    journal = RemoteJournal(held, plan.blocks) if resumable else None
    try:
        if resumable:
            try:
                remote.claim(held, token)
            except Busy as exc:
                raise OutputBusyError(
                    f"another --resume export of {plan.output} runs now ({exc}); wait for it to end"
                ) from None
        try:
            if plan.writer.capabilities.object_store:
                if existing:  # a store has no rename to swap it at the end
                    plan.writer.delete(plan.spec)
                paths, conversions = _write_remote(
                    plan, token, journal, progress, scheduler, cancel
                )
            else:
                paths, conversions = _stage_and_upload(plan, token, progress, scheduler, cancel)
        finally:
            if resumable:
                with contextlib.suppress(Exception):
                    remote.release(held)
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, plan.output, "write") from None
        raise
    return _result(plan, paths, start, resumable, conversions=conversions)


def _refuse_foreign_objects(plan: ExportPlan, kept: bool) -> None:
    """Refuse a Zarr output whose place in the store holds objects but no Zarr node (someone's
    files, not an output): a failed export removes every key there. ``kept``: they are this
    plan's own, kept by an interrupted ``--resume`` run."""
    where = plan.output
    if container.in_existing(plan.output, plan.internal):
        where = container.node_path(plan.output, plan.internal)
    if not kept and remote.exists(where):
        raise OutputExistsError(
            f"{where} holds objects but no Zarr metadata (not an output lazyexport can "
            "replace); choose another output, or remove them"
        )


def _write_remote(
    plan: ExportPlan,
    token: str,
    journal: Journal | None,
    progress: ProgressCallback | None,
    scheduler: Any,
    cancel: threading.Event | None,
) -> tuple[list[Path], Conversions | None]:
    """Write a Zarr output in place in its object store; an interrupted resumable export keeps
    what it wrote, and the blocks its ``journal`` lists are skipped the next time."""
    with scheduler_session(scheduler) as resolved:
        target = plan.writer.open(plan.spec, token)
        try:
            done = journal.load() if journal is not None else set()
            conversions = _write_all(plan, target, journal, done, resolved, progress, cancel)
            with zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}):
                return target.commit(), conversions  # the held metadata (the journal) goes too
        except BaseException:
            if journal is None:
                with contextlib.suppress(Exception):  # else the next export cleans it up
                    target.abort()
            raise


def _stage_and_upload(
    plan: ExportPlan,
    token: str,
    progress: ProgressCallback | None,
    scheduler: Any,
    cancel: threading.Event | None,
) -> tuple[list[Path], Conversions | None]:
    """Export to a local staging directory (``TMPDIR``), then upload (:func:`remote.upload`).
    An existing file the export adds to (``Writer.adds_to_existing``: a dataset into an HDF5
    file holding others) is fetched into the staging directory first, so the upload keeps
    what else it holds, as a local export into it would."""
    staging = Path(tempfile.mkdtemp(prefix="lazyexport-upload-"))
    try:
        kept = [
            (p, found[0])
            for p in plan.paths
            if plan.writer.adds_to_existing(plan.spec) and (found := remote.stamp(p)) is not None
        ]
        needed = plan.nbytes + sum(size for _, size in kept)
        free = shutil.disk_usage(staging).free
        if free < needed:
            raise OutputLocationError(
                f"cannot stage {plan.output} for the upload: {format_bytes(free)} free in "
                f"{staging.parent}, the export writes up to {format_bytes(needed)}; set "
                "TMPDIR to a larger disk, or export to Zarr (written to the store directly)"
            )
        local = {p: staging.joinpath(*p.parts[1:]) for p in plan.paths}
        for url, _ in kept:
            _fetch(url, local[url])
        staged = dataclasses.replace(
            plan, output=local[plan.output], paths=tuple(local[p] for p in plan.paths)
        )
        done = _execute(staged, new_token(), False, True, progress, scheduler, cancel, False)
        return remote.upload([(local[p], p) for p in plan.paths], token), done.conversions
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(url: Path, path: Path) -> None:
    """Copy the object at ``url`` to the local file ``path``, 16 MiB at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        shutil.copyfileobj(remote.RemoteFile(url, buffer_size=16 * 2**20), f, 16 * 2**20)


def _refuse_existing(plan: ExportPlan, existing: list[Path]) -> None:
    """Refuse to replace the outputs ``existing`` (without ``overwrite``), naming the first."""
    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
    dataset = plan.writer.dataset(plan.spec)
    name = f"{existing[0]}/{dataset}" if dataset and existing[0] == plan.output else existing[0]
    raise OutputExistsError(
        f"{name}{more} exists already; pass overwrite=True (--overwrite) to replace it"
    )


def _check_location(plan: ExportPlan) -> None:
    """Refuse, before anything is computed, outputs whose directory cannot be made or written:
    a file where a directory must be, a read-only file system, no permission."""
    for parent in {p.parent for p in plan.paths}:
        found = next(
            a
            for a in (parent.absolute(), *parent.absolute().parents)
            if a.exists() or a.is_symlink()
        )
        if not found.is_dir():
            raise OutputLocationError(
                f"{found} is a file, so the output directory {parent} cannot be made; "
                f"choose another output"
            )
        if not os.access(found, os.W_OK | os.X_OK):
            raise OutputLocationError(
                f"cannot write in {found} (a read-only file system, or no permission); "
                f"choose another output"
            )


# What the file system says when the output's place is the problem (not the source's).
_LOCATION_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "a read-only file system",
    errno.EACCES: "no permission",
    errno.EPERM: "no permission",
    errno.ENOTDIR: "a file where a directory must be",
    errno.EEXIST: "a file where a directory must be",
}


def _missing_dirs(plan: ExportPlan) -> list[Path]:
    """The directories of ``plan``'s outputs that do not exist yet, deepest first."""
    missing: set[Path] = set()
    for parent in {p.parent for p in plan.paths}:
        for directory in (parent, *parent.parents):
            if directory.exists() or directory.is_symlink():
                break
            missing.add(directory)
    return sorted(missing, key=lambda d: len(d.parts), reverse=True)


def _remove_empty(directories: list[Path]) -> None:
    """Remove those of ``directories`` (deepest first) that are empty: what a failed export
    made and left nothing in."""
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


# A short write with no error number (numpy's tofile, as tifffile writes pages): on a local
# file, the disk (or quota) is full
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


def _location_error(plan: ExportPlan, exc: BaseException, kept: bool) -> OutputLocationError | None:
    """``exc`` in the user's terms, where the output's own place caused it (a full disk during
    the writes or the commit, a directory made read-only meanwhile), else None."""
    if isinstance(exc, OSError) and exc.errno is None and _SHORT_WRITE.match(str(exc)):
        exc = OSError(errno.ENOSPC, str(exc))
    if not isinstance(exc, OSError) or exc.errno not in _LOCATION_ERRNOS:
        return None
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT) and not (
        exc.filename and _is_output(plan, Path(exc.filename))
    ):
        return None  # e.g. the source cannot be read: not about the output
    needed = (
        f" (the export writes about {format_bytes(plan.nbytes)} uncompressed)"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT)
        else ""
    )
    left = "kept for --resume" if kept else "removed"
    return OutputLocationError(
        f"cannot write {plan.output}: {_LOCATION_ERRNOS[exc.errno]}{needed}; "
        f"the temporary output was {left}"
    )


def _is_output(plan: ExportPlan, path: Path) -> bool:
    """Whether ``path`` is (inside) one of ``plan``'s outputs, their temporaries, or the
    directory they go in."""
    finals = {p.absolute() for p in plan.paths}
    hidden = tuple(f".{p.name}.lazyexport-" for p in plan.paths)
    path = path.absolute()
    if path in {p.parent for p in finals}:
        return True
    return any(q in finals or q.name.startswith(hidden) for q in (path, *path.parents))


def _result(
    plan: ExportPlan,
    paths: list[Path],
    start: float,
    resume: bool,
    measured: bool = False,
    conversions: Conversions | None = None,
) -> ExportResult:
    return ExportResult(
        format=plan.writer.name,
        output=plan.output,
        paths=paths,
        internal=plan.internal,
        shape=plan.shape,
        dtype=plan.dtype,
        axes=plan.axes,
        nbytes=plan.nbytes,
        seconds=time.perf_counter() - start,
        notes=export_notes(plan, resume),
        peak_memory=cost.peak_rss() if measured else 0,
        projected_peak=plan.priced.projected_peak,
        conversions=conversions,
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
        False: plan and open the output now, and return a ``dask.delayed`` object that writes
        it (commit included) when computed, giving the ExportResult; several of them (and other
        work) computed in one ``dask.compute`` call read their shared source chunks once
        (docs/usage.md, "In a bigger dask graph"). Local outputs only.

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
        given = [
            name
            for name, value in (
                ("scheduler", scheduler),
                ("progress", progress),
                ("cancel", cancel),
                ("resume", resume),
            )  # fmt: skip
            if value not in (None, False)
        ]
        if given:
            raise SettingsError(
                f"compute=False exports take no {', '.join(given)}: the computation is the "
                "caller's (dask.compute with its own scheduler)"
            )
    if settings is not None and settings.regions:
        with remote.options(storage_options):
            if not compute:
                regions = plan_regions(
                    source, settings, None, nickname, memory_limit, overwrite, lazy=True
                )
                return [export_lazily(p, overwrite=overwrite) for p in regions.plans]
            each = (lambda _, event: progress(event)) if progress is not None else None
            return export_regions(
                source, settings, nickname=nickname, overwrite=overwrite,
                memory_limit=memory_limit, progress=each, scheduler=scheduler, cancel=cancel,
                resume=resume,
            )  # fmt: skip
    if not compute:
        with remote.options(storage_options):
            plan = build_plan(source, settings, nickname=nickname, memory_limit=memory_limit)
            return export_lazily(plan, overwrite=overwrite)
    with remote.options(storage_options), scheduler_session(scheduler, memory_limit) as resolved:
        plan = plan_on(resolved, source, settings, nickname=nickname, memory_limit=memory_limit)
        return execute(
            plan,
            overwrite=overwrite,
            progress=progress,
            scheduler=resolved,
            cancel=cancel,
            resume=resume,
        )


@dataclasses.dataclass
class RegionResults:
    """What an export of several regions wrote: an :class:`ExportResult` per region, by name (in
    the order given), and how the regions shared their reads."""

    results: dict[str, ExportResult]
    kept: list[str] = dataclasses.field(default_factory=list)  # left as they were (--resume)
    shared_units: int = 0  # source read units more than one region reads
    read_again: int = 0  # reads of those beyond the first (over the sharing limit)
    sharing: str = ""  # why nothing was shared, where nothing could be

    def __getitem__(self, name: str) -> ExportResult:
        return self.results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __str__(self) -> str:
        lines = [f"{name}: {result}" for name, result in self.results.items()]
        lines += [f"{name}: kept, its output exists (resume)" for name in self.kept]
        if self.sharing:
            lines.append(self.sharing)
        elif self.shared_units:
            how = (
                f"{self.read_again} reads beyond the first (over the sharing limit)"
                if self.read_again
                else "each read once"
            )
            lines.append(
                f"{len(self.results)} regions: {self.shared_units} source chunks read by several "
                f"regions, {how}"
            )
        return "\n".join(lines)


@dataclasses.dataclass
class RegionPlans:
    """The plans of an export of several regions, made and checked before anything is written
    (:func:`plan_regions`)."""

    names: list[str]
    plans: list[ExportPlan]
    boxes: list[dict[str, tuple[int, int]]]  # each region's [start, stop) per source axis
    existing: list[str]  # regions whose output exists (left alone with resume)
    shared: SharedChunks | None
    sharing: str  # why nothing is shared, where nothing can be


# below this, the plans keep the whole limit and regions read for themselves
MIN_SHARING = 4 * 2**20
# more shared read units than this are not tracked (the bookkeeping would cost memory)
MAX_SHARED_UNITS = 200_000


def plan_regions(
    source: Any,
    settings: ExportSettings,
    scheduler: Any,
    nickname: str | None = None,
    memory_limit: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    lazy: bool = False,
) -> RegionPlans:
    """Plan each of ``settings.regions`` for ``scheduler`` (as :func:`scheduler_session` yields
    it), and refuse, before anything is written: a region that does not fit the source, outputs
    two regions share (any of their files), and existing outputs without ``overwrite`` (with
    ``resume`` these regions are left as they are). Source chunks several regions read are
    shared where they can be (one process; not for ``lazy`` exports, whose graphs share reads
    themselves): a quarter of ``memory_limit`` holds them and the plans get the rest."""
    src = open_source(source)
    items = region_settings(settings)
    names_ = [name for name, _ in items]
    dims = names(src)
    boxes = []
    for name, each in items:
        with _in_region(name):
            boxes.append(resolve_roi(each.roi, dims, src.shape))
    limit = parse_memory_limit(memory_limit)
    shared, why = (None, "") if lazy else _shared_chunks(src, boxes, scheduler, limit)
    if shared is not None:
        src = src.copy(deep=False)
        attach_facts(src, source_facts(src).replace(reader=shared))
        limit -= shared.limit
    plans = []
    for name, each in items:
        with _in_region(name):
            plans.append(plan_on(scheduler, src, each, nickname=nickname, memory_limit=limit))
    outputs = [
        (name, (path if lazy else f"{path}/{p.internal}".rstrip("/")))
        for name, p in zip(names_, plans)
        for path in map(str, p.paths)
    ]
    check_distinct(outputs, settings.output)
    existing = []
    for name, p in zip(names_, plans):
        found = p.writer.existing(p.spec)
        if found and not overwrite:
            if not resume:
                with _in_region(name):
                    _refuse_existing(p, found)
            existing.append(name)
    return RegionPlans(names_, plans, boxes, existing, shared, why)


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
    results: dict[str, ExportResult] = {}
    with scheduler_session(scheduler, memory_limit) as resolved:
        regions = plan_regions(
            source, settings, resolved, nickname, memory_limit, overwrite, resume
        )
        dims = list(regions.boxes[0]) if regions.boxes else []
        order = sorted(range(len(regions.plans)), key=lambda i: [regions.boxes[i][d] for d in dims])
        for i in order:
            name, plan = regions.names[i], regions.plans[i]
            if name not in regions.existing:
                if before is not None:
                    before(name, plan)
                each = (lambda event, name=name: progress(name, event)) if progress else None
                with _in_region(name, written=list(results)):
                    results[name] = execute(
                        plan, overwrite=overwrite, progress=each, scheduler=resolved,
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


@contextlib.contextmanager
def _in_region(name: str, written: list[str] | None = None) -> Iterator[None]:
    """An error in here names the region (and the regions already written)."""
    try:
        yield
    except ExportError as exc:
        done = f" (written: {', '.join(written)})" if written else ""
        exc.args = (f"region {name!r}: {exc}{done}", *exc.args[1:])
        raise


def _shared_chunks(
    src: Any, boxes: list[dict[str, tuple[int, int]]], scheduler: Any, limit: int
) -> tuple[SharedChunks | None, str]:
    """The reader that shares source chunks between the regions (``boxes``: each region's
    ``[start, stop)`` per axis) within a quarter of ``limit``, where they can be shared; else
    None and why not (empty: nothing is decoded twice anyway, or nothing overlaps)."""
    reader = read_through(src)
    _, bounds = read_model(src)
    dims = names(src)
    if reader is None:
        return None, (
            "regions compute their source each for itself: a source that is a dask graph (an "
            "array, a glob of slices) has no file chunks to share"
        )
    if isinstance(reader, np.ndarray) or any(bounds[d] is None for d in dims):
        return None, ""  # in memory, or read as it lies: nothing is decoded
    if scheduler not in ("threads", "synchronous"):
        return None, (
            "regions read their source chunks each for itself: sharing them needs the threads "
            "scheduler (one process)"
        )
    room = min(limit // 4, limit - MIN_MEMORY_LIMIT)
    if room < MIN_SHARING:
        return None, "regions read their source chunks each for itself: the memory limit is small"
    edges = [bounds[d] or (0, n) for d, n in zip(dims, src.shape)]  # (None: returned above)
    regions = [tuple(slice(*box[d]) for d in dims) for box in boxes]
    shared = SharedChunks(reader, edges, src.dtype, regions, room, MAX_SHARED_UNITS)
    if shared.overlapping > MAX_SHARED_UNITS:
        return None, (
            f"regions read their source chunks each for itself: they overlap in more than "
            f"{MAX_SHARED_UNITS} chunks"
        )
    return (shared, "") if shared.shared else (None, "")


def export_lazily(plan: ExportPlan, overwrite: bool = False) -> Any:
    """``plan``'s export as a ``dask.delayed`` object: computing it writes every block and then
    commits (the atomic finish), and returns the :class:`ExportResult`. Its graph reads the
    source through the source's own dask keys, so exports of one source computed together (one
    ``dask.compute`` call) read each source chunk once. The temporary output is made now; a
    computation that fails leaves it for the next export of the same output (or ``lazyexport
    clean``) to remove. Local outputs only; no progress, cancel or resume: the computation is
    the caller's (memory: what dask's scheduler holds, not the plan's budget)."""
    if is_url(plan.output):
        raise SettingsError(
            "compute=False exports write local outputs; export to a URL with compute=True"
        )
    token = new_token()  # not registered as running: leftovers of a failed graph are orphans
    clean_outputs(plan, keep=token)
    existing = plan.writer.existing(plan.spec)
    if existing and not overwrite:
        _refuse_existing(plan, existing)
    _check_location(plan)
    target = plan.writer.open(plan.spec, token)
    # the mark of this export not computed yet: the commit removes it (with the temporaries), so
    # a second computation, in any process, finds it gone and writes nothing
    mark = temp_path(plan.paths[0], token, "lazy")
    try:
        os.close(create_new(mark))
    except BaseException:
        target.abort()
        raise
    target.scratch.append(mark)
    marked = (mark, f"{plan.output}/{plan.internal}".rstrip("/"))  # and the output it names
    data = plan.result.data.rechunk(plan.blocks)  # one task per planned block, as writers expect
    lock = SerializableLock() if plan.writer.capabilities.single_writer else None
    stored = da.map_blocks(
        _store_block,
        data,
        target=target,
        lock=lock,
        mark=marked,
        dtype=np.float64,
        chunks=tuple((1,) * len(c) for c in data.chunks),
        name=f"lazyexport-store-{token}",
    )
    # unoptimized: optimizing the array graph here would fuse each read of a source chunk into
    # this export's tasks, and exports computed together could not share it
    written = stored.to_delayed(optimize_graph=False).ravel().tolist()
    return dask.delayed(_commit_lazily, pure=False)(written, target, plan, marked)


def _uncommitted(mark: Path, output: str) -> None:
    """Refuse to compute a ``compute=False`` export whose ``mark`` is gone: it committed
    already (or another export of its output removed its temporaries)."""
    if not mark.exists():
        raise AlreadyComputedError(
            f"this compute=False export of {output} was computed already (it commits once, so "
            "its output is left as it is), or another export of the same output removed its "
            "temporary output; call export(..., compute=False) again for a new one"
        )


def _store_block(
    block: np.ndarray, target, lock, mark: tuple[Path, str], block_info=None
) -> np.ndarray:
    """Write one block; return when its writing started (wall clock: tasks may run anywhere)."""
    _uncommitted(*mark)
    started = time.time()
    location = tuple(slice(a, b) for a, b in block_info[0]["array-location"])
    with lock if lock is not None else contextlib.nullcontext():
        target.write(block, location)
    return np.full((1,) * block.ndim, started)


def _commit_lazily(written: list, target, plan: ExportPlan, mark: tuple[Path, str]) -> ExportResult:
    """Commit once every block is written; the result's time runs from the first block's
    start (not from when the graph was built)."""
    _uncommitted(*mark)
    first = min(float(w.min()) for w in written)
    with zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}):
        paths = target.commit()
    # the time the blocks took on the wall clock, as a perf_counter start for _result
    return _result(plan, paths, time.perf_counter() - (time.time() - first), False)


def plan_on(
    scheduler: Any, source: Any, settings: ExportSettings | None = None, **options: Any
) -> ExportPlan:
    """:func:`lazyexport.plan.build_plan` for where it will run: on a dask cluster (``scheduler``
    a ``distributed.Client``, as :func:`scheduler_session` yields) sized for its workers."""
    if isinstance(scheduler, str) or scheduler is None:
        return build_plan(source, settings, in_process=scheduler != "processes", **options)
    return build_plan(
        source, settings, workers=cluster_workers(scheduler, options.get("memory_limit")), **options
    )
