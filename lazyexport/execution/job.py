"""An export job: one plan's token, preflight, opened target, resume journal and commit, made
once and run by any executor (:func:`lazyexport.run.execute`'s block tasks, or the dask graph
of a ``compute=False`` export: :mod:`.lazy`).

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
from ..plan import ZARR_CONCURRENCY, ExportPlan
from ..resume import Journal, RemoteJournal, open_resumable
from ..sources.base import release_files
from ..storage import temp_path
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


def check_local(plan: ExportPlan, token: str, overwrite: bool) -> None:
    """Before a local export writes: remove what killed exports left beside its outputs (but
    ``token``'s own), refuse existing outputs without ``overwrite``, and directories that
    cannot be made or written."""
    clean_outputs(plan, keep=token)
    existing = plan.writer.existing(plan.spec)
    if existing and not overwrite:
        refuse_existing(plan, existing)
    check_location(plan)


def check_remote(plan: ExportPlan, token: str, resumable: bool) -> tuple[list[Path], bool]:
    """Before an export to a URL writes: remove what killed exports left beside its outputs,
    and refuse someone's objects where a Zarr store goes. Return the existing outputs, and
    whether they are ``token``'s own, committed by an interrupted resumable run (whose held
    metadata is removed now: nothing is left to do)."""
    held = temp_path(plan.output, token)
    try:
        remote.clean_beside(plan.paths, keep=token)
        existing = list(plan.writer.existing(plan.spec))
        if resumable and existing and remote.exists(held):  # its commit ran, the cleanup did not
            remote.delete_prefix(held)
            return existing, True
        if plan.writer.capabilities.object_store and not existing:
            refuse_foreign_objects(plan, kept=resumable and remote.exists(held))
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, plan.output, "write") from None
        raise
    return existing, False


def open_job(plan: ExportPlan, token: str, resumable: bool) -> ExportJob:
    """Open ``plan``'s target under ``token`` (resumable: on its deterministic temporary output,
    with the journal of what interrupted runs finished); a failure to open it removes the
    directories it made and is said in the user's terms where the output's place caused it."""
    made = missing_dirs(plan)
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


def open_remote_job(plan: ExportPlan, token: str, journal: RemoteJournal | None) -> ExportJob:
    """Open a Zarr output in place in its object store; ``journal``: a resumable export's, kept
    in the store beside the held metadata."""
    target = plan.writer.open(plan.spec, token)
    done = journal.load() if journal is not None else set()
    return ExportJob(plan, token, target, journal, done)


def commit(job: ExportJob) -> list[Path]:
    """Finish ``job`` once every block is written: the atomic rename (or publication) of its
    outputs, the journal removed with the temporaries; return the paths written."""
    release_files(job.plan.paths)  # a source read from the output's own file (HDF5) must let go
    if job.journal is not None and not isinstance(job.journal, RemoteJournal):
        job.target.scratch.append(job.journal.path)  # removed with the commit, before its record
    with zarr.config.set({"async.concurrency": ZARR_CONCURRENCY}):
        return job.target.commit()  # a remote journal goes with the held metadata
