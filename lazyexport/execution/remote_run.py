"""Exports to a URL (``compute=True``): Zarr and OME-Zarr are written in place in the object
store, the metadata that makes them visible last (see :mod:`lazyexport.remote`); other formats
are exported to a local staging directory (``TMPDIR``) and uploaded by the commit. A resumable
Zarr export claims its held metadata while it runs and keeps it, with a journal of the finished
blocks, when interrupted. The block writes themselves are the local engine's
(:class:`Engine`: :mod:`lazyexport.run` passes its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from dask.utils import format_bytes

from .. import remote
from ..errors import OutputBusyError, OutputLocationError
from ..plan import ExportPlan
from ..resume import Journal
from ..storage import Busy, new_token, temp_path
from .job import check_outputs, commit, open_job
from .results import Conversions, ExportResult, ProgressCallback, make_result


class Engine(Protocol):
    """What an export to a URL asks the local engine for."""

    def session(self, scheduler: Any) -> contextlib.AbstractContextManager[Any]: ...

    def write_all(
        self,
        plan: ExportPlan,
        target: Any,
        journal: Journal | None,
        done: set[tuple[int, ...]],
        scheduler: Any,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Conversions | None: ...

    def execute(
        self,
        plan: ExportPlan,
        token: str,
        resumable: bool,
        overwrite: bool,
        progress: ProgressCallback | None,
        scheduler: Any,
        cancel: threading.Event | None,
        resume: bool,
    ) -> ExportResult: ...


def execute_remote(
    engine: Engine,
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
    existing, finished = check_outputs(plan, token, overwrite, resumable)
    if finished:
        return make_result(plan, existing, start, True)
    try:
        with _held(plan, held, token, resumable):
            if plan.writer.capabilities.object_store:
                if existing:  # a store has no rename to swap it at the end
                    plan.writer.delete(plan.spec)
                paths, conversions = _write_remote(
                    engine, plan, token, resumable, progress, scheduler, cancel
                )
            else:
                paths, conversions = _stage_and_upload(
                    engine, plan, token, progress, scheduler, cancel
                )
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, plan.output, "write") from None
        raise
    return make_result(plan, paths, start, resumable, conversions=conversions)


@contextlib.contextmanager
def _held(plan: ExportPlan, held: Path, token: str, resumable: bool) -> Iterator[None]:
    """A resumable export's claim of its held metadata in the store, while it runs."""
    if not resumable:
        yield
        return
    try:
        remote.claim(held, token)
    except Busy as exc:
        raise OutputBusyError(
            f"another --resume export of {plan.output} runs now ({exc}); wait for it to end"
        ) from None
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            remote.release(held)


def _write_remote(
    engine: Engine,
    plan: ExportPlan,
    token: str,
    resumable: bool,
    progress: ProgressCallback | None,
    scheduler: Any,
    cancel: threading.Event | None,
) -> tuple[list[Path], Conversions | None]:
    """Write a Zarr output in place in its object store; an interrupted resumable export keeps
    what it wrote, and the blocks its journal lists are skipped the next time."""
    with engine.session(scheduler) as resolved:
        job = open_job(plan, token, resumable)
        try:
            conversions = engine.write_all(
                plan, job.target, job.journal, job.done, resolved, progress, cancel
            )
            return commit(job), conversions  # the held metadata (the journal) goes too
        except BaseException:
            if job.journal is None:
                with contextlib.suppress(Exception):  # else the next export cleans it up
                    job.target.abort()
            raise


def _stage_and_upload(
    engine: Engine,
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
        done = engine.execute(staged, new_token(), False, True, progress, scheduler, cancel, False)
        return remote.upload([(local[p], p) for p in plan.paths], token), done.conversions
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(url: Path, path: Path) -> None:
    """Copy the object at ``url`` to the local file ``path``, 16 MiB at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        shutil.copyfileobj(remote.RemoteFile(url, buffer_size=16 * 2**20), f, 16 * 2**20)
