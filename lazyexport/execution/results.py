"""What an export reports: :class:`Progress` after every block, :class:`ExportResult` at the end
(with :class:`Conversions`: what converting to an integer type clipped). Values only: nothing
here writes or reads.

A :class:`Progress`'s ``fraction`` is monotonic over an export's events. Where the target has
finishing work after its blocks (an OME-Zarr pyramid's coarser levels: ``finishing_total``,
bytes of the levels read to make them), the work is the blocks' bytes plus those, the commit
(the atomic rename) counts as the last :data:`COMMIT_SHARE` of it, and the fraction is 1.0 only
in the one event after the commit (``committed``); without finishing work it is the blocks
done, as each block is reported.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import format_bytes

from .. import cost
from ..errors import redact
from ..formats.layout import ArrayLayout
from ..plan import ExportPlan

# the share of an export with finishing work that its commit counts for in ``Progress.fraction``
# (a bar shows at most 99 % before the commit)
COMMIT_SHARE = 0.01


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where an export stands; handed to the ``progress`` callback after every block."""

    blocks_done: int
    blocks_total: int
    bytes_done: int  # uncompressed result bytes written so far
    bytes_total: int
    elapsed: float
    # bytes the target's finishing work has read of ``finishing_total`` (0: none to do)
    finishing_done: int = 0
    finishing_total: int = 0
    committed: bool = False  # the event after the commit (exports with finishing work)

    @property
    def fraction(self) -> float:
        blocks = self.blocks_done / self.blocks_total if self.blocks_total else 1.0
        if not self.finishing_total:
            return blocks
        if self.committed:
            return 1.0
        done = blocks * self.bytes_total + self.finishing_done
        return (1 - COMMIT_SHARE) * done / (self.bytes_total + self.finishing_total)

    @property
    def eta(self) -> float | None:
        if self.finishing_total:
            done = self.fraction
            return self.elapsed * (1 - done) / done if done else None
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
    # the arrays written beside the planned one (an OME-Zarr pyramid's levels, level 0 first)
    arrays: tuple[ArrayLayout, ...] = ()

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
        report = "".join(f"\n  level {a}" for a in self.arrays)
        report += f"\n  {self.report}" if self.report else ""
        return (
            f"wrote {self.format} {where}: {''.join(self.axes)} {self.shape} {self.dtype}, "
            f"{self.nbytes / 1e6:.1f} MB in {self.seconds:.2f} s ({rate:.0f} MB/s){memory}"
            f"{report}"
        )


ProgressCallback = Callable[[Progress], Any]
NamedProgress = Callable[[str, Progress], Any]  # (a dataset's or region's name, progress)


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


def export_notes(plan: ExportPlan, resume: bool) -> tuple[str, ...]:
    """The plan's notes, and that ``resume`` does not apply to its format where it does not (such
    an export starts from the beginning): what an export of ``plan`` reports."""
    if resume and not plan.writer.capabilities.resumable:
        return (*plan.notes, f"{plan.writer.name} outputs cannot resume; exported from the start")
    return plan.notes


def make_result(
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
        arrays=plan.writer.arrays(plan.spec),
    )
