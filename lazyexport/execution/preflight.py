"""The checks every export makes before it writes (an existing output without ``overwrite``, a
directory that cannot be made or written, someone's objects where a Zarr store goes), and the
output's own failures said in the user's terms. Nothing here writes an output; refusals come
before anything is computed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from dask.utils import format_bytes

from .. import remote
from ..errors import OutputExistsError, OutputLocationError
from ..formats import container
from ..plan import ExportPlan
from ..storage.capabilities import holds_files
from ..storage.targets import beside, clean_beside


def beside_outputs(plan: ExportPlan) -> tuple[set[Path], set[str]]:
    """Where the temporaries of ``plan``'s outputs lie: the directories, and the output names
    they are named after (through a symlinked store too)."""
    return beside(plan.paths)


def clean_outputs(plan: ExportPlan, keep: str | None = None, dry_run: bool = False):
    """Remove (or list) what killed exports left beside ``plan``'s outputs: see
    :func:`lazyexport.storage.targets.clean_beside` (at a URL it lists nothing)."""
    return clean_beside(plan.paths, keep=keep, dry_run=dry_run)


def refuse_foreign_objects(plan: ExportPlan, kept: bool) -> None:
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


def refuse_existing(plan: ExportPlan, existing: list[Path]) -> None:
    """Refuse to replace the outputs ``existing`` (without ``overwrite``), naming the first."""
    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
    dataset = plan.writer.dataset(plan.spec)
    name = f"{existing[0]}/{dataset}" if dataset and existing[0] == plan.output else existing[0]
    raise OutputExistsError(
        f"{name}{more} exists already; pass overwrite=True (--overwrite) to replace it"
    )


def check_location(plan: ExportPlan) -> None:
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


def missing_dirs(plan: ExportPlan) -> list[Path]:
    """The directories of ``plan``'s outputs that do not exist yet, deepest first."""
    missing: set[Path] = set()
    for parent in {p.parent for p in plan.paths}:
        for directory in (parent, *parent.parents):
            if directory.exists() or directory.is_symlink():
                break
            missing.add(directory)
    return sorted(missing, key=lambda d: len(d.parts), reverse=True)


def remove_empty(directories: list[Path]) -> None:
    """Remove those of ``directories`` (deepest first) that are empty: what a failed export
    made and left nothing in."""
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


# A short write with no error number (numpy's tofile, as tifffile writes pages): on a local
# file, the disk (or quota) is full
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


@contextlib.contextmanager
def storage_said(plan: ExportPlan) -> Iterator[None]:
    """Say an object store's error while exporting ``plan`` into one in the user's terms (one
    line naming the output and the cause: :func:`lazyexport.remote.describe`); an export to
    files leaves a source's errors to be said as a source's."""
    try:
        yield
    except Exception as exc:
        if remote.is_storage_error(exc) and not holds_files(plan.output):
            raise remote.describe(exc, plan.output, "write") from None
        raise


def location_error(plan: ExportPlan, exc: BaseException, kept: bool) -> OutputLocationError | None:
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
