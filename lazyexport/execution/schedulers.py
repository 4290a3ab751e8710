"""Where block tasks run: scheduler names, the executor of a plan on a scheduler, and the
sizing of a plan for a dask cluster's workers. A cancelled distributed run stops its writes on
every worker (:func:`stop_writes`) before its temporary output is removed. A plan for a dask
cluster whose workers write the output's files is refused (one OutputLocationError, before
anything is written) when a worker does not see the output's directory as this machine sees
it (:func:`refuse_unseen`), and so is an output staged in this machine's TMPDIR before its upload
to an object store when a worker does not see that directory; objects written to a store in
place and outputs the workers only encode for skip it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import cost
from ..errors import ExportCancelled, OutputLocationError, SchedulerError
from ..plan import ExportPlan, Workers, build_plan, parse_memory_limit
from ..settings import ExportSettings
from ..storage.capabilities import holds_files
from .executors import Distributed, Executor, Inline, Processes, Threads
from .staging import stages, staging_root

CONNECT_TIMEOUT = 10.0  # seconds a cluster's first worker may take to join
STOP_TIMEOUT = 120.0  # seconds to wait for a cancelled run's writes to finish on the workers
LOCAL_SCHEDULERS = ("threads", "synchronous", "processes", "local-cluster")

# Writes running in this process, per run, and the runs whose writes must not start any more:
# a cancelled distributed run stops new writes and waits until none of its writes runs on any
# worker before it removes the temporary output (a task that was still reading its block when
# the run was cancelled then writes nothing).
_ACTIVE: collections.Counter[str] = collections.Counter()
_STOPPED: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def stop_writes(run: str) -> int:
    """Let no write task of ``run`` start in this process from now on; return how many are
    still running (called on workers)."""
    with _ACTIVE_LOCK:
        _STOPPED.add(run)
        return _ACTIVE[run]


def _wait_writes_stopped(client, run: str) -> None:
    """Stop new writes of ``run`` on every worker and wait (at most STOP_TIMEOUT) until none
    runs any more: cancelling futures does not interrupt tasks already running (reading their
    block, or writing it), and those must not write after the temporary output is removed.
    Twice quiet in a row, for a worker that joins between two looks."""
    deadline = time.monotonic() + STOP_TIMEOUT
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        try:
            busy = client.run(stop_writes, run, on_error="ignore")
        except Exception:  # the cluster is gone: nothing runs there any more
            return
        quiet = quiet + 1 if not any(busy.values()) else 0
        time.sleep(0.1)


def is_client(scheduler: Any) -> bool:
    """Whether ``scheduler`` is a ``distributed.Client``. A client exists only once
    ``distributed`` is imported, so this never imports it (a second or more of start-up)."""
    distributed = sys.modules.get("distributed")
    client = getattr(distributed, "Client", None)
    return client is not None and isinstance(scheduler, client)


_ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)\S+$|^[\w.-]+:\d+$", re.IGNORECASE)


def scheduler_name(scheduler: Any) -> str | Any:
    """Check ``scheduler`` and return its canonical form: a local scheduler's name, a scheduler
    address, or the ``distributed.Client`` itself. Raises SchedulerError for anything else."""
    if scheduler is None:
        return "threads"
    if is_client(scheduler):
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


def plan_on(
    scheduler: Any, source: Any, settings: ExportSettings | None = None, **options: Any
) -> ExportPlan:
    """:func:`lazyexport.plan.build_plan` for where it will run: on a dask cluster (``scheduler``
    a ``distributed.Client``, as :func:`scheduler_session` yields) sized for its workers."""
    if isinstance(scheduler, str) or scheduler is None:
        return build_plan(source, settings, in_process=scheduler != "processes", **options)
    plan = build_plan(
        source, settings, workers=cluster_workers(scheduler, options.get("memory_limit")), **options
    )
    refuse_unseen(scheduler, plan)
    return plan


SEEN_NAMES = 256  # names of the output's directory here that a worker looks for


def sees(directory: str, names: list[str]) -> bool:
    """Whether ``directory`` is a directory here holding one of ``names`` (any, when none is
    given): run on each worker for :func:`refuse_unseen`."""
    if not os.path.isdir(directory):
        return False
    return not names or any(os.path.lexists(os.path.join(directory, n)) for n in names)


def refuse_unseen(client: Any, plan: ExportPlan) -> None:
    """Refuse ``plan`` when a worker of ``client``'s cluster that would write its files does not
    see the directory they go to as this machine does: the output's nearest existing directory,
    or for an output staged here before its upload (:func:`~.staging.stages`: a format that
    edits files, to an object store) the staging directory, ``TMPDIR``. Objects written to a
    store in place, and outputs the workers only encode for (single-writer formats), skip it."""
    if plan.writer.capabilities.single_writer:
        return
    if stages(plan):
        _refuse_blind(
            client,
            staging_root().absolute(),
            f"and {plan.output} is staged there before its upload; set TMPDIR to a directory "
            "every worker shares under the same path, or export to Zarr (written to the store "
            "directly)",
        )
    elif holds_files(plan.output):
        near = next(
            a for a in (plan.output.absolute(), *plan.output.absolute().parents) if a.is_dir()
        )
        _refuse_blind(
            client,
            near,
            "and the output goes there; put the output on storage every worker shares under the "
            "same path, or in an object store",
        )


def _refuse_blind(client: Any, near: Path, why: str) -> None:
    """Raise OutputLocationError (ending in ``why``) when a worker does not see ``near`` as
    this machine does. The probe is a file of a name made for it, created in ``near`` here and
    removed afterwards: a worker sees ``near`` when it sees that file (names a node-local
    directory shares with every other host's, ``/tmp/.X11-unix`` say, prove nothing). Where
    ``near`` cannot be written here, a worker must see ``near`` holding one of (up to
    SEEN_NAMES of) the names it holds here."""
    made = near / f".lazyexport-probe-{uuid.uuid4().hex}"
    probe: Path | None = made
    try:
        made.touch(exist_ok=False)
        names = [made.name]
    except OSError:  # not writable here: look for the names it holds
        probe = None
        try:
            with os.scandir(near) as entries:
                names = [e.name for e in itertools.islice(entries, SEEN_NAMES)]
        except OSError:  # not listable here either: look for the directory only
            names = []
    try:
        seen = client.run(sees, str(near), names, on_error="ignore")
    except Exception:  # noqa: BLE001 -- no worker answers: the export's own errors say why
        return
    finally:
        if probe is not None:
            with contextlib.suppress(OSError):
                probe.unlink()
    blind = sorted(worker for worker, yes in seen.items() if not yes)
    if blind:
        raise OutputLocationError(
            f"{len(blind)} of {len(seen)} dask workers ({blind[0]}{', ...' * (len(blind) > 1)}) "
            f"do not see {near} as this machine does, {why}"
        )


@contextlib.contextmanager
def writing(run: str) -> Iterator[None]:
    """One block write of ``run`` under way in this process; refused (ExportCancelled) once the
    run was stopped (:func:`stop_writes`)."""
    with _ACTIVE_LOCK:
        if run in _STOPPED:  # cancelled while this task read its block: write nothing
            raise ExportCancelled("export cancelled")
        _ACTIVE[run] += 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE[run] -= 1
            if not _ACTIVE[run]:
                del _ACTIVE[run]
