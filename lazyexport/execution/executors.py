"""Executors: run an export's block tasks in a bounded window.

Every executor takes the same three things: the block indices (a lazy iterator: a grid may hold
millions of blocks, and none is listed in advance), a picklable ``job`` that computes and writes
one block and returns what it wrote, and ``done``, called in the exporting thread with each
result as it arrives. At most ``window`` tasks are submitted at a time; as one completes the
next is submitted, so the time to the first written block and the memory of the exporting
process do not grow with the volume. ``check()`` is called between completions and raises to
stop (a cancel). On an error or a stop no new task is submitted, the tasks already running are
waited for, and the error is raised.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import SchedulerError

Job = Callable[[tuple[int, ...]], Any]
POLL = 0.05  # seconds between checks for a cancel while tasks run
NO_WORKER_TIMEOUT = 120.0
MAX_JOB_SENDS = 5  # a cluster that loses the job (or a block's task) more often fails the export
SEND_TIMEOUT = 2.0  # seconds to wait for a worker to take the job sent again


class Executor:
    """Runs block tasks; see the module's docstring."""

    window: int = 1

    def run(
        self,
        indices: Iterator[tuple[int, ...]],
        job: Job,
        done: Callable[[Any], None],
        check: Callable[[], None],
    ) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__.lower()


class Inline(Executor):
    """One task at a time, in the exporting thread (the ``synchronous`` scheduler)."""

    def run(self, indices, job, done, check) -> None:
        for index in indices:
            check()
            done(job(index))

    def describe(self) -> str:
        return "synchronous"


class _PoolExecutor(Executor):
    """A ``concurrent.futures`` pool with ``window`` tasks submitted at most."""

    def __init__(self, workers: int):
        self.workers = max(int(workers), 1)
        self.window = self.workers

    def _pool(self, job: Job) -> tuple[cf.Executor, Callable[..., Any], tuple]:
        raise NotImplementedError

    def run(self, indices, job, done, check) -> None:
        pool, call, extra = self._pool(job)
        pending: set[cf.Future] = set()
        indices = iter(indices)
        try:
            while True:
                check()
                for index in itertools.islice(indices, self.window - len(pending)):
                    pending.add(pool.submit(call, *extra, index))
                if not pending:
                    break
                finished, pending = cf.wait(pending, timeout=POLL, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    done(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # running tasks end before this returns


class Threads(_PoolExecutor):
    def _pool(self, job):
        return cf.ThreadPoolExecutor(self.workers, thread_name_prefix="lazyexport"), job, ()

    def describe(self) -> str:
        return f"{self.workers} thread{'s' * (self.workers != 1)}"


_INSTALLED: list[Job] = []


def _install(job: Job) -> None:
    _INSTALLED[:] = [job]


def _call_installed(index: tuple[int, ...]) -> Any:
    return _INSTALLED[0](index)


class Processes(_PoolExecutor):
    """Worker processes (spawned); the job is pickled to each once, when it starts."""

    def _pool(self, job):
        pool = cf.ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_install,
            initargs=(job,),
        )
        return pool, _call_installed, ()

    def describe(self) -> str:
        return f"{self.workers} process{'es' * (self.workers != 1)}"


def _call(job: Job, index: tuple[int, ...]) -> Any:
    return job(index)


def _no_worker_since(since: float) -> None:
    if time.monotonic() > since + NO_WORKER_TIMEOUT:
        raise SchedulerError(f"the dask cluster has had no worker for {NO_WORKER_TIMEOUT:g} s")


def _lost(client) -> bool:
    """Whether ``client`` has lost its scheduler (it reconnects, or gave up and closed)."""
    return client.status not in ("running", "newly-created")


class _NoReconnectLog(logging.Filter):
    """Drops distributed's log line about a failed reconnect: the run raises it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to reconnect")


@contextlib.contextmanager
def _scheduler_loss(client) -> Iterator[None]:
    """Raise the loss of ``client``'s scheduler during the block as one SchedulerError, once
    distributed has given up reconnecting (its log line about that is dropped meanwhile)."""
    logger, quiet = logging.getLogger("distributed.client"), _NoReconnectLog()
    address = getattr(client.scheduler, "address", None) or "its address"  # gone once closed
    logger.addFilter(quiet)
    try:
        yield
    except Exception:
        if not _lost(client):
            raise
        settled = time.monotonic() + NO_WORKER_TIMEOUT  # until distributed stops reconnecting
        while client.status in ("connecting", "closing") and time.monotonic() < settled:
            time.sleep(POLL)
        raise SchedulerError(
            f"lost the connection to the dask scheduler at {address} during the export "
            "(the scheduler stopped, or the network to it failed)"
        ) from None
    finally:
        logger.removeFilter(quiet)


class Distributed(Executor):
    """A dask cluster: ``slots`` tasks at a time on each worker (by address; a worker that
    joins later gets ``default_slots``), ``window`` at most in all. The job is sent to every worker
    once; each task is submitted to a worker with a free slot (another may run it if that one has
    left)."""

    def __init__(
        self,
        client,
        slots: dict[str, int],
        default_slots: int = 1,
        window: int | None = None,
        on_stop: Callable[[], None] | None = None,
    ):
        self.client, self.slots, self.default_slots = client, dict(slots), default_slots
        self.window = max(min(window or sum(self.slots.values()), sum(self.slots.values())), 1)
        self.on_stop = on_stop

    def _free(self, busy: dict[str, int]) -> str | None:
        if sum(busy.values()) >= self.window:
            return None
        workers = self.client.scheduler_info().get("workers", {})
        for address in workers:
            if busy.get(address, 0) < self.slots.get(address, self.default_slots):
                return address
        return None

    def _submit(self, blocks: _Blocks, shared: _SharedJob, pending, busy, completed) -> None:
        """Submit blocks while a worker has a free slot (and the job is on the cluster)."""
        while not blocks.done:
            address = self._free(busy)
            if address is None or not shared.sent():
                return
            index = blocks.next()
            if index is None:
                return
            future = self.client.submit(
                _call,
                shared.future,
                index,
                workers=[address],
                allow_other_workers=True,
                pure=False,
                key=f"lazyexport-block-{'-'.join(map(str, index))}-{time.monotonic_ns()}",
            )
            pending[future] = (address, index)
            completed.add(future)
            busy[address] = busy.get(address, 0) + 1

    def run(self, indices, job, done, check) -> None:
        with _scheduler_loss(self.client):
            self._run(indices, job, done, check)

    def _run(self, indices, job, done, check) -> None:
        from distributed import as_completed
        from distributed.client import FutureCancelledError

        client = self.client
        blocks = _Blocks(indices)
        shared = _SharedJob(client, job, blocks)
        pending: dict[Any, tuple[str, tuple[int, ...]]] = {}
        busy: dict[str, int] = {}
        completed = as_completed(loop=client.loop)
        lonely = time.monotonic()
        try:
            while True:
                check()
                self._submit(blocks, shared, pending, busy, completed)
                if not pending:
                    if blocks.done:
                        break
                    _no_worker_since(lonely)
                    time.sleep(POLL)
                    continue
                lonely = time.monotonic()
                finished = completed.next_batch(block=False)
                if not finished:
                    time.sleep(POLL)
                for future in finished:
                    address, index = pending.pop(future)
                    busy[address] -= 1
                    try:
                        result = future.result()
                    except FutureCancelledError as error:
                        shared.forgot(index, error)
                        continue
                    done(result)
                    future.release()
        except BaseException:
            client.cancel(list(pending))
            if self.on_stop is not None:
                self.on_stop()
            raise
        finally:
            client.cancel([shared.future])

    def describe(self) -> str:
        return f"a dask cluster, {self.window} task{'s' * (self.window != 1)} at a time"


class _Blocks:
    """The block indices still to submit: those whose task the scheduler forgot first, then the
    rest of the lazy iterator."""

    def __init__(self, indices: Iterator[tuple[int, ...]]):
        self.indices, self.again = iter(indices), list[tuple[int, ...]]()
        self.exhausted = False

    @property
    def done(self) -> bool:
        return self.exhausted and not self.again

    def next(self) -> tuple[int, ...] | None:
        if self.again:
            return self.again.pop()
        index = None if self.exhausted else next(self.indices, None)
        self.exhausted = index is None
        return index


class _SharedJob:
    """The export's job, sent to every worker once (``future``). When the scheduler forgets a
    block's task (finished or not), the workers that held the job died (a worker that joined
    after the broadcast fetches it from one that has it): the block is run again, and the job,
    if it is gone, sent again as soon as a worker is there to take it (:meth:`sent`). Losing the
    job ``MAX_JOB_SENDS`` times, or one block's task more often, fails the export."""

    def __init__(self, client, job: Job, blocks: _Blocks):
        self.client, self.job, self.blocks = client, job, blocks
        self.future = client.scatter(job, broadcast=True, hash=False)
        self.gone = False
        self.losses = 0
        self.forgotten: dict[tuple[int, ...], int] = {}

    def sent(self) -> bool:
        """Whether the job is on the cluster: sent again now if it was lost (False if no worker
        takes it: the caller waits for one)."""
        if self.gone:
            try:
                self.future = self.client.scatter(
                    self.job, broadcast=True, hash=False, timeout=SEND_TIMEOUT
                )
            except (TimeoutError, OSError):  # no worker yet, or it died meanwhile
                if _lost(self.client):
                    raise
                return False
            self.gone = False
        return True

    def forgot(self, index: tuple[int, ...], error: BaseException) -> None:
        if _lost(self.client):
            raise error  # the scheduler itself is gone
        if not self.gone and self.future.status != "finished":
            self.losses += 1
            if self.losses >= MAX_JOB_SENDS:
                raise SchedulerError(
                    f"the dask cluster lost the export's job {self.losses} times "
                    "(its workers keep dying)"
                ) from None
            self.client.cancel([self.future])
            self.gone = True
        self.forgotten[index] = self.forgotten.get(index, 0) + 1
        if self.forgotten[index] > MAX_JOB_SENDS:
            raise SchedulerError(
                f"the dask cluster cancelled the task of block {index} "
                f"{self.forgotten[index]} times"
            ) from None
        self.blocks.again.append(index)
