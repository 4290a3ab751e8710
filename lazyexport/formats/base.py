"""The one extension point: a Writer (one per output format) and the Target it opens.

The runner owns scheduling, progress, memory budgets and atomicity; a writer only says what
block shape it wants, creates its files under temporary names, writes the blocks it is handed,
and renames on commit.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from ..plan import ExportPlan


class Target:
    """An output being written. Picklable: ``write`` may run on other threads or processes.

    Subclasses list every temporary path they create in ``self.temps`` (final path -> temporary
    path) so that :meth:`abort` and :meth:`commit` treat them alike.
    """

    def __init__(self, temps: dict[Path, Path]):
        self.temps = temps

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        """Write ``block`` at ``location`` (output coordinates); return the bytes written."""
        raise NotImplementedError

    def finish(self) -> None:
        """Complete metadata and close files before the rename (nothing by default)."""

    def commit(self) -> list[Path]:
        """Finish, then move every temporary output to its final name; return the final paths."""
        self.finish()
        for final, temp in self.temps.items():
            replace(temp, final)
        return list(self.temps)

    def abort(self) -> None:
        """Remove everything this target created; existing outputs stay as they were."""
        self.close()
        for temp in self.temps.values():
            remove(temp)

    def close(self) -> None:
        """Release open handles (nothing by default)."""


class Writer:
    """Base of every output format. Register subclasses with :func:`lazyexport.formats.register`."""

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]   # the first is appended to templates without one
    is_sequence: ClassVar[bool] = False
    resumable: ClassVar[bool] = False                     # open() takes a resume_token
    compressions: ClassVar[tuple[str, ...]] = ("none",)   # the first is the default
    chunk_bytes: ClassVar[int] = 4 * 2**20                # preferred bytes per output chunk
    description: ClassVar[str] = ""

    def chunks(self, plan: ExportPlan) -> tuple[int, ...]:
        """The chunk shape of the output, in output axes (blocks are whole multiples of it)."""
        return plan.default_chunks(self.chunk_bytes)

    def existing(self, plan: ExportPlan) -> list[Path]:
        """The outputs of ``plan`` that exist already (and would be replaced)."""
        return [p for p in plan.paths if p.exists() or p.is_symlink()]

    def open(self, plan: ExportPlan) -> Target:
        """Create the output under temporary names. Writers that are ``resumable`` also take
        ``resume_token``: then the temporary names use it, and what exists under them is kept."""
        raise NotImplementedError

    def delete(self, plan: ExportPlan, dry_run: bool = False) -> list[str]:
        """Remove what an export of ``plan`` wrote (its final outputs that exist, nothing else);
        return what was (or, with ``dry_run``, would be) removed."""
        found = self.existing(plan)
        if not dry_run:
            for path in found:
                remove(path)
        return [str(p) for p in found]

    def compression(self, plan: ExportPlan) -> str:
        return plan.settings.compression or self.compressions[0]


def temp_path(final: Path, token: str | None = None) -> Path:
    """A hidden temporary name beside ``final``, so the final rename never crosses file systems."""
    token = token or uuid.uuid4().hex[:10]
    return final.with_name(f".{final.name}.lazyexport-{token}.tmp")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def replace(temp: Path, final: Path) -> None:
    """Move ``temp`` to ``final``; a directory replacing a directory is swapped, then the old one removed."""
    if final.is_dir() and not final.is_symlink():
        trash = temp_path(final, "old-" + uuid.uuid4().hex[:6])
        os.replace(final, trash)
        os.replace(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temp, final)
