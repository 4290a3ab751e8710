"""An export job: one plan's token, preflight, opened target, resume journal and commit, made
once and run by any executor (:func:`lazyexport.run.execute`'s block tasks, or the dask graph
of a ``compute=False`` export: :mod:`.lazy`), wherever the output is: local files and object
stores differ only in what their backend can do (:class:`lazyexport.storage.Backend`'s
``renames`` and ``directories``), never by a test of the location's kind here.

A job's target is open from :func:`open_job` until :func:`commit` (or the target's abort): the
output appears at its final place only in the commit. A resumable job's journal lists the
blocks finished by interrupted runs (``done``), which no executor writes again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import zarr

from .. import remote
from ..errors import OutputBusyError
from ..plan import ZARR_CONCURRENCY, ExportPlan
from ..resume import Journal, open_resumable
from ..sources.base import release_files
from ..storage import temp_path
from ..storage.held import holds_run_state, running_beside
from ..storage.resolve import backend_of
from .preflight import (
    check_location,
    clean_outputs,
    location_error,
    missing_dirs,
    refuse_existing,
    refuse_foreign_objects,
    remove_empty,
)

Block = tuple[int, ...]


@dataclasses.dataclass
class ExportJob:
    """One plan's export, opened: write its blocks not ``done`` into ``target`` (recording each
    in ``journal``), then :func:`commit`. ``made``: the directories opening it made (a failed
    export removes them where empty)."""

    plan: ExportPlan
    token: str
    target: Any
    journal: Journal | None = None
    done: set[Block] = dataclasses.field(default_factory=set)
    made: list[Path] = dataclasses.field(default_factory=list)


def check_outputs(
    plan: ExportPlan, token: str, overwrite: bool, resumable: bool
) -> tuple[list[Path], bool]:
    """Before an export writes, wherever its output is: remove what killed exports left beside
    its outputs (but ``token``'s own) and refuse existing outputs without ``overwrite``; where
    keys live in directories, refuse directories that cannot be made or written; where an
    output is written in place (no rename at the commit), refuse someone's objects where a
    Zarr store goes. Return the existing outputs, and whether they are ``token``'s own,
    committed in place by an interrupted resumable run (whose held metadata is removed now:
    nothing is left to do)."""
    backend = backend_of(plan.output)
    held = temp_path(plan.output, token)
    try:
        clean_outputs(plan, keep=token)
        if not backend.renames:
            refuse_running(plan, token)
        existing = list(plan.writer.existing(plan.spec))
        kept = resumable and not backend.renames and holds_run_state(held)
        if kept and existing:  # its commit ran in place, the cleanup did not
            remote.delete_prefix(held)
            return existing, True
        if existing and not overwrite:
            refuse_existing(plan, existing)
        if backend.directories:
            check_location(plan)
        if not (backend.renames or existing) and plan.writer.capabilities.object_store:
            refuse_foreign_objects(plan, kept=kept)
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, plan.output, "write") from None
        raise
    return existing, False


def refuse_running(plan: ExportPlan, token: str) -> None:
    """Refuse an export written in place (an object store: no rename) while another live run
    writes the same output: their chunks would mix in one visible output."""
    running = running_beside(plan.paths, keep=token)
    if running:
        raise OutputBusyError(
            f"another export of {plan.output} runs now ({running[0].name}); wait for it to end"
        )


def open_job(plan: ExportPlan, token: str, resumable: bool) -> ExportJob:
    """Open ``plan``'s target under ``token`` (resumable: on its deterministic temporary output,
    with the journal of what interrupted runs finished); a failure to open it removes the
    directories it made and is said in the user's terms where the output's place caused it."""
    made = missing_dirs(plan) if backend_of(plan.output).directories else []
    try:
        if resumable:
            target, journal, done = open_resumable(plan, token)
            return ExportJob(plan, token, target, journal, done, made)
        return ExportJob(plan, token, plan.writer.open(plan.spec, token), made=made)
    except BaseException as exc:
        remove_empty(made)
        mistake = location_error(plan, exc, kept=False)
        if mistake is not None:
            raise mistake from None
        raise


def commit(job: ExportJob) -> list[Path]:
    """Finish ``job`` once every block is written: the atomic rename (or publication) of its
    outputs, the journal removed with the temporaries; return the paths written."""
    release_files(job.plan.paths)  # a source read from the output's own file (HDF5) must let go
    if job.journal is not None:  # removed with the commit, before its record (in a store: with
        job.target.scratch.extend(job.journal.files())  # the held metadata)
    with zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}):
        return job.target.commit()
