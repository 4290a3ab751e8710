"""Exports of a format that edits files in place (HDF5, TIFF, npy, ...) to a place without files
(an object store): the one engine (:func:`lazyexport.run.execute`, passed in as
``Engine``) exports to a local staging directory (``TMPDIR``), and the commit uploads what
it wrote (:func:`lazyexport.remote.upload`); the staging directory is removed however the export
ends. Zarr and OME-Zarr are written into a store in place, by the engine itself: nothing of this
module applies to them.

Invariants: the checks of the output at its place run before anything is staged (an existing
output without ``overwrite`` is refused first); nothing appears at the output's place before
the upload; an export staged here does not resume (it starts from the beginning).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dask.utils import format_bytes

from .. import remote
from ..errors import OutputLocationError
from ..plan import ExportPlan
from ..storage import new_token
from ..storage.capabilities import holds_files
from .job import check_outputs
from .preflight import storage_said
from .results import Conversions, ExportResult, ProgressCallback, make_result

# the engine's export of a claimed plan (passed in: lazyexport.run imports this module), called
# as run's _execute: (plan, token, resumable, overwrite, progress, scheduler, cancel, resume)
Engine = Callable[..., ExportResult]


def stages(plan: ExportPlan) -> bool:
    """Whether ``plan``'s output is staged here: its writer edits files, and its place holds
    none (an object store)."""
    return not (plan.writer.capabilities.object_store or holds_files(plan.output))


def staging_root() -> Path:
    """Where outputs are staged before their upload: this machine's ``TMPDIR``."""
    return Path(tempfile.gettempdir())


def execute_staged(
    engine: Engine,
    plan: ExportPlan,
    token: str,
    overwrite: bool,
    progress: ProgressCallback | None,
    scheduler: Any,
    cancel: threading.Event | None,
) -> ExportResult:
    """Check ``plan``'s output at its place, export it to a staging directory with ``engine``,
    then upload it under ``token`` (see the module's docstring)."""
    start = time.perf_counter()
    with storage_said(plan):
        check_outputs(plan, token, overwrite, resumable=False)
        paths, conversions = _stage_and_upload(engine, plan, token, progress, scheduler, cancel)
    return make_result(plan, paths, start, False, conversions=conversions)


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
    staging = Path(tempfile.mkdtemp(prefix="lazyexport-upload-", dir=staging_root()))
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
        done = engine(staged, new_token(), False, True, progress, scheduler, cancel, False)
        return remote.upload([(local[p], p) for p in plan.paths], token), done.conversions
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(url: Path, path: Path) -> None:
    """Copy the object at ``url`` to the local file ``path``, 16 MiB at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        shutil.copyfileobj(remote.RemoteFile(url, buffer_size=16 * 2**20), f, 16 * 2**20)
