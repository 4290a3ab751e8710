"""ExportPlan: a source and settings -> the lazy result, its output chunks and blocks, and the
files.

Building a plan reads metadata only (one exception: renormalizing without an input range reads
the ROI once to find its min/max, and says so in ``plan.notes``). :func:`build_plan` makes it in
one pass of steps, each returning the (frozen) plan with its decisions added; the blocks and tasks
in flight are the cost model's choice (:mod:`lazyexport.cost`). A plan can be inspected
(``print(plan)``, :meth:`ExportPlan.summary`) before :func:`lazyexport.run.execute` writes anything,
and execution never changes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.utils import format_bytes, parse_bytes

from . import cost, location
from . import template as tpl
from .axes import names
from .errors import FormatError, MemoryLimitError, SettingsError, TemplateError, redact
from .formats import Writer, format_for, get_writer
from .formats.sequence import template_files
from .formats.spec import OutputSpec
from .percentiles import percentiles
from .remote import READ_ONLY, UrlPath, as_path, is_url
from .roi import resolve_roi, roi_text
from .settings import ExportSettings, percentile_of
from .sources import open_source
from .sources.base import Window, dask_chunks, reader_array
from .sources.facts import source_facts
from .transforms import (
    compute_dtype,
    convert_block,
    converter,
    cutout,
    dtype_range,
    renormalizer,
    transpose,
)
from .units import DEFAULT_UNIT, to_micrometers

DEFAULT_MEMORY_LIMIT = 2**30
# what a cluster's worker may hold beyond its even share of the budget: its interpreter and
# the libraries it imports (a local-cluster worker's limit has room for its share + this)
WORKER_ALLOWANCE = 256 * 2**20
# The largest block (output bytes) one task writes, whatever the budget: keeps progress and
# cancellation fine-grained on large budgets. LAZYEXPORT_MAX_BLOCK_BYTES (e.g. 4MiB) sets it.
MAX_BLOCK_BYTES = parse_bytes(os.environ.get("LAZYEXPORT_MAX_BLOCK_BYTES", "1GiB"))
# The extra time of a staged slice sequence (the output written to and read from disk once more).
STAGING_TIME = 0.5
MIN_CHUNK_BYTES = 64 * 2**10  # the planner's own output chunks are not made smaller than this
ZARR_CONCURRENCY = 4  # chunks zarr-python decodes at once per read (set by the runner)
# Memory one block in flight can take, as a multiple of its size: only for the pyramid levels
# an OME-Zarr writer builds from the level before (the planner's own blocks use lazyexport.cost).
BLOCK_MEMORY_FACTOR = 6


@dataclasses.dataclass(frozen=True)
class Workers:
    """Where block tasks run when that is a dask cluster: its workers, the threads of each, and
    the memory each may add for the export (its ``memory_limit`` less what it holds now, kept
    under distributed's pause threshold), as :func:`lazyexport.run.cluster_workers` reads them."""

    count: int
    threads: int
    budget: int  # bytes one worker may add (one task must fit it)
    baseline: int  # bytes the busiest worker holds now
    memory_limit: int  # each worker's own limit (0: none)
    total: int = 0  # bytes all workers together may add (0: count x budget)

    @property
    def all_workers(self) -> int:
        return self.total or self.count * self.budget

    def __str__(self) -> str:
        limit = (
            f", memory limit {format_bytes(self.memory_limit)} each" if self.memory_limit else ""
        )
        return (
            f"sized for the dask cluster: {self.count} worker{'s' * (self.count != 1)} x "
            f"{self.threads} thread{'s' * (self.threads != 1)}{limit}; the export's tasks may add "
            f"{format_bytes(self.all_workers)} in all, up to {format_bytes(self.budget)} on one "
            f"worker (threads of this machine do not apply)"
        )


# the smallest memory limit an export takes
MIN_MEMORY_LIMIT = 16 * 2**20


def parse_memory_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_MEMORY_LIMIT
    try:
        limit = int(value) if isinstance(value, (int, np.integer)) else parse_bytes(str(value))
    except (ValueError, TypeError):
        raise SettingsError(
            f"cannot read memory limit {value!r}; write e.g. 512MiB or 2GiB"
        ) from None
    if limit < MIN_MEMORY_LIMIT:
        raise SettingsError(
            f"memory limit {format_bytes(limit)} is too small; give at least "
            f"{MIN_MEMORY_LIMIT // 2**20} MiB"
        )
    return limit


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    source: xr.DataArray
    settings: ExportSettings
    writer: Writer
    nickname: str
    roi: dict[str, tuple[int, int]]  # absolute [start, stop) per source axis
    result: xr.DataArray  # lazy, in output axes, chunked as `blocks`
    output: Path  # the file, store or (sequences) first slice file
    internal: str  # dataset path inside an HDF5 file / Zarr store
    paths: tuple[Path, ...]  # every final file or directory the export writes
    memory_limit: int
    workers: int
    chunks: tuple[int, ...] = ()  # output chunk shape
    shards: tuple[int, ...] | None = None  # Zarr v3 shard shape (whole chunks), if sharded
    renormalize: tuple[tuple[float, float], tuple[float, float]] | None = None
    slice_axis: str | None = None  # sequences: the axis the files run along
    slice_start: int = 0  # sequences: source index of the first slice
    staged: bool = False  # sequences: blocks follow the source, slices assembled on disk
    # sequences: the path of every slice file, "\0" where the slice index goes (see OutputSpec)
    slice_template: str = ""
    notes: tuple[str, ...] = ()
    order: str | None = None  # the writer's own axis order, applied after the settings' transpose
    # the block shape chosen and what it costs (see lazyexport.cost); build_plan always sets it
    costs: cost.Costs | None = None
    cluster: Workers | None = None  # the dask cluster's workers it is sized for, if any
    # block tasks are threads of one process: read units that straddle block edges are decoded
    # once, for all blocks
    in_process: bool = True

    @property
    def axes(self) -> tuple[str, ...]:
        return names(self.result)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.result.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.result.dtype

    @property
    def nbytes(self) -> int:
        return int(self.result.nbytes)

    def pyramid_budget(self) -> int:
        """Bytes one block of a pyramid level may take (the OME-Zarr writer builds each level
        from the one before, after the export's own blocks)."""
        return min(self.memory_limit // (BLOCK_MEMORY_FACTOR * max(self.workers, 1)), 64 * 2**20)

    @property
    def priced(self) -> cost.Costs:
        """The costs of the block shape chosen (every plan from :func:`build_plan` has them)."""
        if self.costs is None:
            raise RuntimeError("this plan has no block shape yet: build it with build_plan")
        return self.costs

    @property
    def block(self) -> tuple[int, ...]:
        """The block shape (output axes): one task computes and writes one block."""
        return self.priced.block[: len(self.axes)]

    @property
    def edges(self) -> tuple[tuple[int, ...], ...]:
        """Per output axis, where blocks start and the last one ends (0, ..., length)."""
        return tuple(
            tuple(int(e) for e in cost.block_edges(n, b, p))
            for n, b, p in zip(self.shape, self.block, self.priced.phase)
        )

    @property
    def spec(self) -> OutputSpec:
        """What the writer is told about the output: :func:`output_spec`."""
        return output_spec(self)

    @property
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        """The block lengths along each output axis (as dask's ``chunks``)."""
        return tuple(tuple(b - a for a, b in zip(e, e[1:])) for e in self.edges)

    @property
    def nblocks(self) -> int:
        return self.priced.tasks

    @property
    def in_flight(self) -> int:
        """How many block tasks run at once."""
        return self.priced.in_flight

    @property
    def value_range(self) -> tuple[int, int] | tuple[float, float] | None:
        """The output's value range where it is known without reading data, exact and ordered,
        as values of the output dtype (Python ints for integer types): the renormalize output
        range converted as the data are (rounded and clipped to an integer type), else an
        integer type's whole range; None for floats that are not renormalized."""
        if self.renormalize is None:
            return dtype_range(self.dtype)
        bounds = np.array(sorted(self.renormalize[1]), dtype=np.float64)
        if self.dtype.kind == "f":  # the nearest values of the type, and finite
            info = np.finfo(self.dtype)
            bounds = np.clip(bounds, info.min, info.max).astype(self.dtype)
        else:
            bounds = convert_block(bounds, self.dtype)
        lo, hi = bounds.tolist()
        return (int(lo), int(hi)) if self.dtype.kind in "biu" else (lo, hi)

    @property
    def pixel_size(self) -> dict[str, float]:
        """Physical pixel size per spatial output axis, where known: the settings' sizes, else
        the source's (``attrs["pixel_size"]``, converted to :attr:`unit`; sizes without a unit
        are taken as they are). Axes without one are left out: nothing is invented."""
        src = self.source.attrs
        src_unit, unit = src.get("unit"), self.unit
        factor = (
            to_micrometers(1.0, src_unit) / to_micrometers(1.0, unit) if src_unit and unit else 1.0
        )
        found = {a: v * factor for a, v in (src.get("pixel_size") or {}).items()}
        found.update(self.settings.pixel_size or {})
        return {a: float(found[a]) for a in self.axes if a in found}

    @property
    def unit(self) -> str | None:
        """The unit of :attr:`pixel_size`: the settings' unit, else the source's. None when the
        only sizes are a source's that have no unit (an OME-Zarr scale without units); else
        micrometer (the settings' sizes without a unit)."""
        src = self.source.attrs
        if self.settings.unit or src.get("unit"):
            return self.settings.unit or src["unit"]
        return None if src.get("pixel_size") and not self.settings.pixel_size else DEFAULT_UNIT

    @property
    def channel_names(self) -> tuple[str, ...] | None:
        """The source's channel names (``attrs["channel_names"]``) of the output's ``c`` axis:
        those inside the ROI, in the source's order. None where the output has no ``c`` axis of
        the source's or the names do not fit it."""
        found = self.source.attrs.get("channel_names")
        if not found or "c" not in self.axes or "c" not in self.roi:
            return None
        start, stop = self.roi["c"]
        kept = tuple(str(n) for n in found)[start:stop]
        fits = len(found) == self.source.sizes["c"] and len(kept) == self.result.sizes["c"]
        return kept if fits else None

    def native_chunks(self) -> tuple[int, ...] | None:
        """The source file's own chunk shape in output axes (1 for added axes), if known."""
        native = source_facts(self.source).native
        if native is None:
            return None
        lengths = dict(zip(names(self.source), native))
        return tuple(min(lengths.get(a, 1), s) for a, s in zip(self.axes, self.shape))

    def default_chunks(self, chunk_bytes: int) -> tuple[int, ...]:
        """An output chunk shape of about ``chunk_bytes`` that follows the data's own chunking
        (each length a divisor or a multiple of the source's, so a block reads whole source
        chunks), whole channel axes kept together, and the user's ``chunks`` setting where given."""
        fixed = dict(self.settings.chunks or {})
        for axis, size in zip(self.axes, self.shape):
            if axis == "c" and size <= 16:
                fixed.setdefault(axis, size)
        previous = self.native_chunks() or tuple(
            max(c) if c else 1 for c in self.result.data.chunks
        )
        return aligned_chunks(
            previous,
            self.shape,
            self.dtype.itemsize,
            chunk_bytes,
            {self.axes.index(a): n for a, n in fixed.items() if a in self.axes},
        )

    def summary(self) -> dict[str, Any]:
        """The plan as plain data (what ``lazyexport export --plan --json`` prints): the output,
        its chunks and shards, the blocks, tasks and tasks in flight, the projected peak memory
        and its parts, the read amplification, staging, and the notes that say why."""
        c = self.priced
        source = self.source.attrs.get("source")
        return {  # no URL's user-info (redact)
            "source": redact(source) if isinstance(source, str) else source,
            "nickname": self.nickname,
            "format": self.writer.name,
            "output": redact(str(self.output)),
            "internal": self.internal,
            "files": len(self.paths),
            "roi": {str(a): list(b) for a, b in self.roi.items()},
            "axes": "".join(self.axes),
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "bytes": self.nbytes,
            "chunks": list(self.chunks),
            "shards": list(self.shards) if self.shards else None,
            "block": list(self.block),
            "tasks": self.nblocks,
            "tasks_in_flight": self.in_flight,
            "threads": self.workers,
            "staged": self.staged,
            "memory_limit": self.memory_limit,
            "projected_peak": c.projected_peak,
            "projected": {
                "baseline": c.baseline,
                "per_task": c.task_peak,
                "block": c.out,
                "piece": c.piece_bytes,
                "reading": c.read_extra,
                "transform": c.transform,
                "writing": c.encode,
                "shared_reads": c.shared,
            },
            "read_amplification": round(c.amplification, 4),
            "source_bytes_decoded": c.decoded,
            "source_bytes_needed": c.needed,
            "notes": [redact(n) for n in self.notes],
        }

    def __str__(self) -> str:
        c = self.priced
        mib = format_bytes
        lines = [
            f"export {self.source.attrs.get('source')} ({self.nickname}) -> {self.writer.name}",
            f"  output     {self.output}"
            + (f" [{self.internal}]" if self.internal else "")
            + (f" (+{len(self.paths) - 1} more files)" if len(self.paths) > 1 else ""),
            f"  roi        {roi_text(self.roi, names(self.source))}",
            f"  result     {''.join(self.axes)} {self.shape} {self.dtype} ({mib(self.nbytes)})",
            f"  chunks     {self.chunks}" + (f" in shards of {self.shards}" if self.shards else ""),
            f"  blocks     {self.block}: {self.nblocks} tasks, {self.in_flight} at a time"
            + (", slices assembled in a staging file" if self.staged else ""),
            "  memory     projected peak "
            f"{mib(c.projected_peak)}{' on each worker' if self.cluster else ''} = "
            f"baseline {mib(c.baseline)} + {min(self.in_flight, c.per_host or self.in_flight)} x "
            f"{mib(c.task_peak)} per task (block {mib(c.out)}, source piece {mib(c.piece_bytes)}, "
            f"reading {mib(c.read_extra)}, transform {mib(c.transform)}, writing {mib(c.encode)})"
            + (f" + {mib(c.shared)} of source chunks kept for the next blocks" if c.shared else "")
            + f"; limit {mib(self.memory_limit)} on top of the baseline",
            f"  reads      {mib(c.decoded)} of source decoded for {mib(c.needed)} in the chunks "
            f"the cutout touches (read amplification {c.amplification:.2f})",
        ]
        lines += [f"  note       {n}" for n in self.notes]
        return redact("\n".join(lines))  # no URL's user-info


def build_plan(
    source: Any,
    settings: ExportSettings | None = None,
    *,
    nickname: str | None = None,
    memory_limit: Any = None,
    threads: int | None = None,
    workers: Workers | None = None,
    in_process: bool = True,
) -> ExportPlan:
    """Plan the export of ``source`` (anything :func:`open_source` takes) with ``settings``:
    ``memory_limit`` is the memory the export may add to the process, ``threads`` how many
    block tasks may run at once at most (default: the machine's cores). With ``workers`` (a dask
    cluster's, see :func:`lazyexport.run.cluster_workers`) blocks and tasks in flight are sized
    for its workers: all their threads, what they may add in all, and no task larger than what
    one of them may add. ``in_process``: the block
    tasks will be threads of one process (not processes or a cluster's workers), so a source
    read unit that straddles blocks is decoded once and kept for the blocks that need it."""
    settings = settings or ExportSettings()
    if settings.regions:
        raise SettingsError(
            f"a plan covers one region, and these settings have {len(settings.regions)}: plan "
            "each (lazyexport.regions.region_settings), or give one ROI"
        )
    src = open_source(source)
    writer = get_writer(settings.format)
    limit = parse_memory_limit(memory_limit)
    threads = threads or os.cpu_count() or 1
    if workers is not None:
        limit, threads = workers.all_workers, workers.count * workers.threads
    nickname = nickname or str(src.attrs.get("nickname", "export"))

    roi = resolve_roi(settings.roi, names(src), src.shape)
    notes: list[str] = [str(workers)] if workers is not None else []
    renorm = None
    if settings.renormalize is not None:
        asked, out_range = settings.renormalize
        if asked is None:
            in_range = _data_range(cutout_reads(src, roi), notes)
        elif any(isinstance(v, str) for v in asked):
            in_range = _data_percentiles(cutout_reads(src, roi), asked, notes)
        else:
            in_range = (float(asked[0]), float(asked[1]))
        renorm = (in_range, out_range)
    result = transform(src, roi, settings, renorm)
    # a format with an axis order of its own (ImageJ's TZCYX) gets one more transpose
    wanted = writer.axis_order(
        names(result), dict(zip(names(result), result.shape)), settings.axis_order
    )
    if wanted == "".join(names(result)):
        wanted = None
    if wanted is not None:
        result = transform(src, roi, settings, renorm, wanted)
        notes.append(f"{writer.name} stores axes in the order {wanted!r}")

    plan = ExportPlan(
        source=src,
        settings=settings,
        writer=writer,
        nickname=nickname,
        roi=roi,
        result=result,
        output=Path(),
        internal="",
        paths=(),
        memory_limit=limit,
        workers=threads,
        renormalize=renorm,
        notes=tuple(notes),
        order=wanted,
        cluster=workers,
        in_process=in_process and workers is None,
    )
    # each step returns the plan with its decisions added (the plan itself is frozen)
    if writer.capabilities.sequence:
        plan = _plan_slices(plan)
    plan = _stored_order(_plan_outputs(plan))
    baseline = workers.baseline if workers is not None else cost.process_rss()
    if writer.capabilities.sequence:
        return _plan_sequence(plan, baseline)
    plan = dataclasses.replace(plan, chunks=_output_chunks(plan, writer))
    if settings.shards is not None:
        return _plan_shards(plan, baseline)
    return _choose_chunks(plan, baseline)


def _stored_order(plan: ExportPlan) -> ExportPlan:
    """The result in the axis order the output stores (``Writer.stored_axes``, known once the
    output is: a TIFF's flavor may come from its name), so that the result's axes are the
    file's; a note says so where it is not the order asked."""
    stored = "".join(plan.writer.stored_axes(plan.spec))
    asked = "".join(plan.axes)
    if stored == asked:
        return plan
    result = transform(plan.source, plan.roi, plan.settings, plan.renormalize, stored)
    note = (
        f"{plan.writer.name} stores axes in the order {stored!r} (not {asked!r}): "
        f"{plan.writer.stored_reason(plan.spec)}; the result's axes are the file's"
    )
    return dataclasses.replace(plan, result=result, order=stored, notes=(*plan.notes, note))


def plan(source: Any, settings: ExportSettings | None = None, **options: Any) -> ExportPlan:
    """The plan of exporting ``source`` with ``settings``, before anything is read or written.

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array or xarray.DataArray
        As for :func:`lazyexport.export`.
    settings : ExportSettings, optional
        As for :func:`lazyexport.export`.
    **options
        ``nickname``, ``memory_limit`` and ``threads`` (block tasks at once at most; default:
        the machine's cores), as :func:`build_plan` takes them.

    Returns
    -------
    ExportPlan
        The output path(s), chunks, shards, blocks, tasks in flight, projected peak memory and
        read amplification; ``print()`` it, or read :meth:`ExportPlan.summary`.

    Raises
    ------
    ExportError
        For settings that cannot be exported (see docs/errors.md).
    """
    return build_plan(source, settings, **options)


def transform(
    src: xr.DataArray,
    roi: dict[str, tuple[int, int]],
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
    order: str | None = None,
) -> xr.DataArray:
    """The lazy export result for ``roi``: cutout, then :func:`steps`, without rechunking.
    :func:`build_plan` applies it to the whole ROI; a preview applies it to a one-plane ROI so
    that only the chunks of that plane are computed."""
    return steps(cutout(src, roi), settings, renorm, order)


def steps(
    arr: xr.DataArray,
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
    order: str | None = None,
) -> xr.DataArray:
    """The transformations after the cutout, in their order: renormalize (with resolved
    ranges), convert, transpose to the settings' axis order, then to the format's own
    (``order``). Block tasks apply the same to each piece of the source they read, in numpy
    (:func:`value_steps`, then the axes of the result)."""
    result = arr
    block, dtype = value_steps(arr.dtype, settings, renorm)
    if block is not None:
        result = arr.copy(data=da.map_blocks(block, arr.data, dtype=dtype))
    if settings.axis_order is not None:
        result = transpose(result, settings.axis_order)
    if order is not None:
        result = transpose(result, order)
    return result


def value_steps(
    dtype: np.dtype,
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, np.dtype]:
    """What :func:`steps` does to the values of a ``dtype`` array, as a function of a numpy
    block that leaves the block unchanged (None: nothing), and the result's dtype: renormalize
    (converting in the same pass), or convert.

    This is where the output dtype is decided, and it is always in native byte order, whatever
    the source's: a big-endian source's values are swapped here (in the block tasks and in the
    lazy result alike), so every writer is handed blocks in the dtype its metadata declares
    (Zarr v3's ``bytes`` codec and OME-Zarr 0.5 are little-endian; N5's codec swaps to the
    big-endian blocks its specification prescribes)."""
    if renorm is not None:
        return renormalizer(dtype, *renorm, settings.dtype)
    to = np.dtype(dtype if settings.dtype is None else settings.dtype).newbyteorder("=")
    return converter(dtype, to), to


def aligned_chunks(
    previous: tuple[int, ...],
    shape: tuple[int, ...],
    itemsize: int,
    chunk_bytes: int,
    fixed: dict[int, int],
) -> tuple[int, ...]:
    """A chunk shape of about ``chunk_bytes`` made from ``previous`` (the source's chunks) by
    splitting its longest axis into equal parts, or doubling its innermost axes, so that every
    length divides or is a multiple of the previous one. Axes in ``fixed`` keep the given length."""
    chunk = [max(min(fixed.get(i, p), s), 1) for i, (p, s) in enumerate(zip(previous, shape))]
    free = [i for i in range(len(chunk)) if i not in fixed]

    def nbytes() -> int:
        return math.prod(chunk) * itemsize

    while nbytes() > chunk_bytes:
        splittable = [i for i in free if chunk[i] > 1]
        if not splittable:
            break
        i = max(splittable, key=lambda j: (chunk[j], -j))  # the longest, outermost on ties
        chunk[i] //= _smallest_factor(chunk[i])
    grown = True
    while grown:
        grown = False
        for i in reversed(free):  # innermost first
            if chunk[i] < shape[i] and nbytes() * 2 <= chunk_bytes:
                chunk[i] = min(chunk[i] * 2, shape[i])
                grown = True
                break
    return tuple(chunk)


def _smallest_factor(n: int) -> int:
    return next((f for f in range(2, math.isqrt(n) + 1) if n % f == 0), n)


def cutout_reads(src: xr.DataArray, roi: Mapping[str, tuple[int, int]]) -> da.Array:
    """The cutout of ``src`` as a dask array that reads only the file chunks (read units) the
    cutout overlaps, each in one task (for a pass over the data: its min/max, percentiles);
    slicing the source's own dask chunks would read them whole, beyond the cutout."""
    reader = read_through(src)
    units = source_facts(src).chunks if reader is not None else None
    dims = names(src)
    if isinstance(reader, np.ndarray) or not units or any(d not in units for d in dims):
        return cutout(src, roi).data
    box = [
        (roi[d][0] // units[d] * units[d], min(-(-roi[d][1] // units[d]) * units[d], n))
        for d, n in zip(dims, src.shape)
    ]
    window = Window(reader, tuple(slice(*b) for b in box), src.dtype)
    arr = reader_array(window, dask_chunks(window.shape, src.dtype, [units[d] for d in dims]))
    return arr[tuple(slice(roi[d][0] - b[0], roi[d][1] - b[0]) for d, b in zip(dims, box))]


def _data_percentiles(arr: da.Array, bounds: tuple, notes: list[str]) -> tuple[float, float]:
    """The input range whose bounds name percentiles (``"p99.9"``) of the data inside the ROI,
    in one bounded pass (:mod:`lazyexport.percentiles`); a note gives the values and how exact."""
    wanted = [percentile_of(b) for b in bounds]
    found = percentiles(arr, [q for q in wanted if q is not None])
    values = iter(found.values)
    lo, hi = (float(b) if q is None else next(values) for b, q in zip(bounds, wanted))
    how = "exact" if found.error == 0 else f"approximate: within {found.error:.3g}"
    shown = ", ".join(f"{b} = {v:g}" for b, v, q in zip(bounds, (lo, hi), wanted) if q is not None)
    # counted in the histogram the percentiles came from (ties at a bound stay inside)
    below, above = found.outside(lo, hi)
    at_least = "" if found.error == 0 else "at least "
    outside = " and ".join(
        f"{at_least}{n} values ({100 * n / found.total:.3g} %) {side}"
        for n, side in ((below, "below"), (above, "above"))
        if n
    )
    beyond = f"; {outside} map beyond the output range" if outside else ""
    notes.append(f"renormalize input range from the data inside the ROI: {shown} ({how}){beyond}")
    if lo == hi:
        raise SettingsError(
            f"cannot renormalize: {shown} give an empty input range; choose other percentiles"
        )
    return (lo, hi)


def _data_range(arr: da.Array, notes: list[str]) -> tuple[float, float]:
    """The min/max of the data inside the ROI (any dtype), read once; a note says so."""
    found = dask.compute(da.nanmin(arr), da.nanmax(arr))
    lo, hi = (float(v) for v in found)
    # integers as they are (a float's %g would round 65535000 to 6.5535e+07)
    shown = [str(int(v)) if arr.dtype.kind in "biu" else f"{float(v):g}" for v in found]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SettingsError(
            "cannot renormalize: the data inside the ROI has no finite values; give an input range"
        )
    if lo == hi:
        raise SettingsError(
            f"cannot renormalize: the data inside the ROI is constant ({shown[0]}); give an input "
            "range"
        )
    notes.append(
        f"renormalize input range taken from the data inside the ROI: [{shown[0]}, {shown[1]}]"
    )
    return (lo, hi)


def _plan_slices(plan: ExportPlan) -> ExportPlan:
    """Sequences run along the outermost non-channel axis; each slice must be 2-D (+ channel)."""
    sizes = plan.result.sizes
    spatial = [a for a in plan.axes if a != "c"]
    if len(spatial) < 3:  # a 2-D result would be cut into 1-D rows
        order = next(a for a in "zt" + "abdefghijklmnopqrsuvw" if a not in plan.axes) + "".join(
            plan.axes
        )
        raise FormatError(
            f"{plan.writer.name} writes one 2-D image per slice, but the result (axes "
            f"{''.join(plan.axes)!r}) has no axis to slice along besides its plane; export it as "
            f"one tiff, or add one with the axis order {order!r}"
        )
    slice_axis, plane = spatial[0], spatial[1:]
    extra = [f"{a!r} (length {sizes[a]})" for a in plane[:-2] if sizes[a] != 1]
    if extra:
        suggestion = "".join(a for a in plan.axes if a == "c" or sizes[a] != 1 or a in plane[-2:])
        raise FormatError(
            f"{plan.writer.name} writes 2-D slices along {slice_axis!r}, but {', '.join(extra)} "
            "would make "
            "each slice more than 2-D; cut it to length 1 with the ROI or choose an axis order "
            f"like {suggestion!r}"
        )
    return dataclasses.replace(
        plan, slice_axis=slice_axis, slice_start=plan.roi.get(slice_axis, (0, 0))[0]
    )


def _plan_outputs(plan: ExportPlan) -> ExportPlan:
    settings, writer, src = plan.settings, plan.writer, plan.source
    template = settings.output
    if template is None:
        template = tpl.default_template(bool(settings.result_type), writer.capabilities.sequence)
    tpl.check(template, names(src), writer.capabilities.sequence)
    _refuse_unnamed(template, writer)
    named = format_for(template)
    if (
        named not in (None, writer.name)
        and tpl.named_extension(template, writer.extensions) is None
    ):
        raise TemplateError(
            f"output {template!r} has the extension of format {named}, but the format is "
            f"{writer.name}: give the format {named} (--format {named}), or another name"
        )
    if not tpl.has_extension(template, writer.extensions):
        template += writer.extensions[0]
    values = tpl.values_for(
        dataset_dir=str(src.attrs.get("dataset_dir", os.getcwd())),
        nickname=plan.nickname,
        result_type=settings.result_type,
        roi=plan.roi,
        roi_text=roi_text(plan.roi, [a for a in plan.axes if a in plan.roi]),
    )
    if writer.capabilities.sequence:
        count = plan.result.sizes[plan.slice_axis]
        width = len(str(plan.slice_start + count - 1))
        paths = []
        for i in range(plan.slice_start, plan.slice_start + count):
            paths.append(
                as_path(tpl.render(template, {**values, "slice_index": tpl.SliceIndex(i, width)}))
            )
        if len(set(paths)) != len(paths):
            raise TemplateError(
                f"output template {template!r} gives several slices the same file name"
            )
        any_slice = str(as_path(tpl.render(template, {**values, "slice_index": tpl.ANY_INDEX})))
        plan = dataclasses.replace(
            plan, paths=tuple(paths), output=paths[0], slice_template=any_slice
        )
    else:
        rendered = tpl.render(template, values)
        file, internal = tpl.split_container(rendered, writer.extensions)
        output = as_path(file)
        plan = dataclasses.replace(plan, output=output, internal=internal, paths=(output,))
    _refuse_url_output(plan)
    _refuse_source_as_output(plan)
    return dataclasses.replace(plan, notes=plan.notes + tuple(writer.check(plan.spec)))


def _refuse_unnamed(template: str, writer: Writer) -> None:
    """An output template ending in '/' without an extension names a directory, not an output
    (it would write a file named only by its extension, ``.zarr``); a URL needs a key."""
    if is_url(template) and not UrlPath(template).key:
        raise TemplateError(
            f"output {template!r} names a bucket, not an output in it; write to "
            f"{UrlPath(template).root}/name{writer.extensions[0]}"
        )
    if template.rstrip().endswith("/") and not tpl.has_extension(template, writer.extensions):
        raise TemplateError(
            f"output {template!r} ends with '/': name the output in it, e.g. "
            f"{template.rstrip()}out{writer.extensions[0]}"
        )


def _refuse_url_output(plan: ExportPlan) -> None:
    """Outputs at URLs: below a bucket (not the bucket itself), not HTTP(S), of a format that
    writes objects."""
    if not is_url(plan.output):
        return
    url, writer = UrlPath(str(plan.output)), plan.writer
    if url.scheme in READ_ONLY:
        raise TemplateError(
            f"{plan.output}: HTTP(S) URLs are read-only; write to s3://, gs://, az:// or a path"
        )
    if not url.key:
        raise TemplateError(
            f"output {plan.output} names a bucket, not an output in it; write to "
            f"{url.root}/name{writer.extensions[0]}"
        )
    if not writer.capabilities.object_store and hasattr(writer, "layout"):
        raise FormatError(
            f"{writer.name} outputs (a directory of files) cannot be written to a URL; export "
            "to zarr or ome-zarr there, or to a local path"
        )


def _output_chunks(plan: ExportPlan, writer: Writer) -> tuple[int, ...]:
    """The chunk shape of the output, in output axes (blocks are whole multiples of it): about
    the writer's ``chunk_bytes``; sequences: one slice deep."""
    # one slice per file (staging, if needed, is the cost model's choice)
    if writer.capabilities.sequence:
        return tuple(1 if a == plan.slice_axis else s for a, s in zip(plan.axes, plan.shape))
    return plan.default_chunks(writer.chunk_bytes)


def _refuse_source_as_output(plan: ExportPlan) -> None:
    """The output must neither be the source nor hold it (replacing it would delete the source),
    nor lie inside it: compared as nodes, a file or store plus the path inside it, in one
    canonical form (:mod:`lazyexport.location`: every spelling of a location is the same)."""
    source = plan.source.attrs.get("source")
    if not source or source.startswith("<"):
        return
    files = [as_path(p) for p in source_facts(plan.source).identity_paths or ()]
    # whole files: e.g. a glob's slice, and every file of a sequence's template (all of them are
    # the output, replaced with it: a source slice numbered with other digits is one of them)
    wholes = [] if plan.writer.dataset(plan.spec) else [*plan.paths]
    wholes += [] if not wholes else template_files(plan.spec.slice_template, plan.paths)
    for path in wholes:
        if any(location.same(path, f) for f in files):
            raise TemplateError(
                f"the output {path} is a file of the source {source}; choose another output "
                "template"
            )
    internal = str(plan.source.attrs.get("internal_path", "")).strip("/")
    src = location.node(as_path(source), internal)
    source = f"{source}/{internal}" if internal else source
    for path in plan.paths:
        out = location.node(path, plan.internal)
        shown = location.shown(path, plan.internal)
        if location.is_same_node(out, src):
            raise TemplateError(
                f"the output {shown} is the source itself; choose another output template"
            )
        if location.inside(src, out):
            raise TemplateError(
                f"the output {shown} holds the source {source}, which writing it would replace; "
                "choose another output template"
            )
        if location.inside(out, src):
            raise TemplateError(
                f"the output {shown} lies inside the source {source}; choose another output "
                "template"
            )


holds = location.holds


def read_model(src: xr.DataArray) -> tuple[cost.Source, dict[str, tuple[int, ...] | None]]:
    """How the source reads (see :class:`lazyexport.cost.Source`) and, per source axis, its
    read-unit boundaries (None: any region is read as it is)."""
    itemsize = src.dtype.itemsize
    reader = read_through(src)
    units = source_facts(src).chunks if reader is not None else None
    axes = names(src)
    bounds: dict[str, tuple[int, ...] | None]
    if reader is None:  # a dask graph: whole chunks are computed
        bounds = {d: tuple(np.cumsum((0, *c)).tolist()) for d, c in zip(axes, src.data.chunks)}
        return cost.Source("dask", itemsize), bounds
    if isinstance(reader, np.ndarray):
        return cost.Source("view", itemsize), dict.fromkeys(axes)
    # (a reader that shares chunks between regions reads through the one it wraps)
    inner = getattr(reader, "wrapped", reader)
    concurrency = 1 if type(inner).__module__.startswith("lazyexport") else ZARR_CONCURRENCY
    bounds = {
        d: _regular(n, units[d]) if units and d in units else None for d, n in zip(axes, src.shape)
    }
    return cost.Source("chunks", itemsize, concurrency=concurrency), bounds


def _regular(size: int, unit: int) -> tuple[int, ...]:
    return tuple(range(0, size, max(unit, 1))) + (size,)


def read_through(src: xr.DataArray) -> Any:
    """What a block task reads ``src`` through: its file reader, the numpy array it wraps, or
    None where it must be computed by dask (the user's dask array, several files joined, or a
    source transformed after it was opened)."""
    facts = source_facts(src)
    reader = facts.reader
    if reader is None or src.data.name != facts.name:
        return None
    return reader


def _cost_axes(
    plan: ExportPlan, unit: tuple[int, ...], aligned: tuple[bool, ...] = ()
) -> list[cost.Axis]:
    """The cost model's axes: the output's, then the source axes the output drops (length 1)."""
    _, bounds = read_model(plan.source)
    sizes = dict(zip(names(plan.source), plan.source.shape))
    axes = []
    for i, (a, n, u) in enumerate(zip(plan.axes, plan.shape, unit)):
        follow = aligned[i] if aligned else False
        if a in sizes:
            axes.append(cost.Axis(a, n, u, plan.roi[a][0], sizes[a], bounds[a], aligned=follow))
        else:
            axes.append(cost.Axis(a, n, 1))
    for d in names(plan.source):
        if d not in plan.axes:
            axes.append(cost.Axis(d, 1, 1, plan.roi[d][0], sizes[d], bounds[d]))
    return axes


def _encode_bytes(
    plan: ExportPlan,
    spec: OutputSpec,
    block: tuple[int, ...],
    unit: tuple[int, ...],
    staged: bool = False,
) -> int:
    """What the writer holds on top of the block while it writes it (see Writer.write_buffers)."""
    itemsize = plan.dtype.itemsize
    out = math.prod(block[: len(plan.axes)]) * itemsize
    if plan.writer.capabilities.sequence:
        pos = plan.axes.index(plan.slice_axis)
        plane = math.prod(n for i, n in enumerate(plan.shape) if i != pos) * itemsize
        return plan.writer.write_buffers(out, plane, staged=staged, spec=spec)
    return plan.writer.write_buffers(out, math.prod(unit) * itemsize, spec=spec)


def _choose(
    plan: ExportPlan,
    unit: tuple[int, ...],
    baseline: int,
    what: str,
    aligned: tuple[bool, ...] = (),
    staged: bool = False,
    time_extra: float = 0.0,
) -> cost.Costs:
    """The cheapest block shape made of whole ``unit`` s that fits the budget, or a one-line
    refusal naming what does not fit (``what``: the user's word for ``unit``)."""
    source, _ = read_model(plan.source)
    source = dataclasses.replace(source, shared=plan.in_process)
    axes = _cost_axes(plan, unit, aligned)
    unit = tuple(unit) + (1,) * (len(axes) - len(unit))
    compute = compute_dtype(plan.source.dtype).itemsize if plan.renormalize else 0

    hosts = plan.cluster.count if plan.cluster is not None else 1
    spec = output_spec(plan)

    def choose(budget: int, host_budget: int | None = None) -> cost.Costs:
        return cost.choose(
            axes,
            source,
            plan.dtype.itemsize,
            compute_itemsize=compute,
            encode=lambda block: _encode_bytes(plan, spec, block, unit, staged),
            budget=budget,
            baseline=baseline,
            threads=plan.workers,
            max_block_bytes=MAX_BLOCK_BYTES,
            time_extra=time_extra,
            hosts=hosts,
            host_budget=host_budget,
        )

    try:
        if plan.cluster is not None:
            # Where a task fits it, keep each worker within an even share of the budget plus its
            # interpreter (WORKER_ALLOWANCE, whose baseline it holds already); else a task may
            # take up to what one worker has room for.
            share = plan.memory_limit // hosts + WORKER_ALLOWANCE - plan.cluster.baseline
            if 0 < share < plan.cluster.budget:
                with contextlib.suppress(cost.NoFit):
                    return choose(plan.memory_limit, share)
        return choose(plan.memory_limit, plan.cluster.budget if plan.cluster is not None else None)
    except cost.NoFit as exc:
        failure = exc
    needed = failure.needed
    for _ in range(8):  # the smallest limit that works (scratch sizes grow a little with the limit)
        needed = -(-needed // 2**20) * 2**20
        try:
            choose(needed)
            break
        except cost.NoFit as exc:
            needed = max(exc.needed, needed + 2**20)
    raise MemoryLimitError(_no_fit(plan, failure, needed, unit, what)) from None


def _no_fit(
    plan: ExportPlan, exc: cost.NoFit, needed: int, unit: tuple[int, ...], what: str
) -> str:
    need = format_bytes(needed)
    limit = format_bytes(plan.memory_limit)
    if plan.cluster is not None:
        limit += (
            f" (up to {format_bytes(plan.cluster.budget)} on one of the cluster's "
            f"{plan.cluster.count} workers)"
        )
        need += " (on one worker: give the workers that much room under their memory limit)"
    _, bounds = read_model(plan.source)
    read = tuple(
        max(b - a for a, b in zip(bs, bs[1:])) if bs else 1
        for bs in (bounds[d] for d in names(plan.source))
    )
    if exc.unit_bytes > plan.memory_limit // 2:
        return (
            f"one source chunk of {read} {plan.source.dtype} decodes to "
            f"{format_bytes(exc.unit_bytes)}, which "
            f"the memory limit {limit} cannot hold while it is converted and written; the smallest "
            f"memory limit that works is {need} (or rechunk the source)"
        )
    shown = unit[: len(plan.axes)]
    return (
        f"{what} of {shown} need about {format_bytes(exc.needed)} while one is computed and "
        "written, more than "
        f"the memory limit {limit}; choose smaller {what}, or a memory limit of at least {need}"
    )


def _choose_chunks(plan: ExportPlan, baseline: int) -> ExportPlan:
    """Blocks for the output chunks; chunks the planner chose itself (not the user's) are made
    smaller, down to MIN_CHUNK_BYTES, where the budget cannot hold one."""
    while True:
        try:
            return dataclasses.replace(
                plan, costs=_choose(plan, plan.chunks, baseline, what="chunks")
            )
        except MemoryLimitError:
            size = math.prod(plan.chunks) * plan.dtype.itemsize
            if plan.settings.chunks or size <= MIN_CHUNK_BYTES:
                raise
            smaller = plan.default_chunks(size // 2)
            if smaller == plan.chunks:
                raise
            plan = dataclasses.replace(plan, chunks=smaller)


def _plan_sequence(plan: ExportPlan, baseline: int) -> ExportPlan:
    """Slices are written straight from blocks of whole planes when the slab of slices one
    source read unit spans fits the budget; else blocks follow the source and slices are
    assembled in a staging file on disk (one more write and read of the output)."""
    pos = plan.axes.index(plan.slice_axis)
    plane = _output_chunks(plan, plan.writer)
    plan = dataclasses.replace(plan, chunks=plane)
    follow = tuple(i == pos for i in range(len(plan.axes)))
    direct = staged = None
    with contextlib.suppress(MemoryLimitError):
        direct = _choose(plan, plane, baseline, "slices", aligned=follow)
    if direct is None or direct.amplification > 1.05:
        ones = (1,) * len(plan.axes)
        with contextlib.suppress(MemoryLimitError):
            staged = _choose(plan, ones, baseline, "slices", staged=True, time_extra=STAGING_TIME)
        if staged is not None and (
            direct is None or staged.amplification < direct.amplification / 1.05
        ):
            plan = dataclasses.replace(plan, staged=True, costs=staged)
            depth = max((c for c in plan.blocks[pos]), default=1)
            note = (
                "a slab of slices as deep as one source chunk does not fit the memory limit: "
                "blocks follow "
                f"the source ({depth} slices deep), and slices are assembled in a staging file "
                "beside the output"
            )
            return dataclasses.replace(plan, notes=plan.notes + (note,))
    if direct is None:
        direct = _choose(plan, plane, baseline, "slices", aligned=follow)  # raises the refusal
    return dataclasses.replace(plan, costs=direct)


def _plan_shards(plan: ExportPlan, baseline: int) -> ExportPlan:
    """The shard shape. ``"auto"``: the block the cost model picks for the chunks (no shards if
    that is one chunk). Else the user's lengths, rounded up to whole chunks, one shard across an
    axis at most; a shard is written by one task, and one that cannot fit the budget is refused."""
    chunks, shape = plan.chunks, plan.shape
    wanted = plan.settings.shards
    if wanted == "auto":
        costs = _choose(plan, chunks, baseline, "chunks")
        shards = tuple(
            min(math.ceil(n / c) * c, math.ceil(s / c) * c)
            for n, c, s in zip(costs.block, chunks, shape)
        )
        if shards == chunks:
            note = "shards 'auto': a block holds one chunk, so the output is not sharded"
            return dataclasses.replace(plan, costs=costs, notes=plan.notes + (note,))
        return dataclasses.replace(plan, costs=costs, shards=shards)
    if not isinstance(wanted, Mapping):  # settings allow no other text than "auto"
        raise SettingsError(f"shards must be 'auto' or lengths per axis, not {wanted!r}")
    unknown = sorted(set(wanted) - set(plan.axes))
    if unknown:
        raise SettingsError(
            f"shards name axes {', '.join(unknown)} that the output (axes {''.join(plan.axes)!r}) "
            "does not have"
        )
    lengths = tuple(wanted.get(a, c) for a, c in zip(plan.axes, chunks))
    shards = tuple(
        min(math.ceil(n / c), math.ceil(s / c)) * c for n, c, s in zip(lengths, chunks, shape)
    )
    if shards != lengths:
        note = (
            f"shards {lengths} rounded up to whole chunks of {chunks}, one shard across an axis "
            f"at most: {shards}"
        )
        plan = dataclasses.replace(plan, notes=plan.notes + (note,))
    plan = dataclasses.replace(plan, shards=shards)
    return dataclasses.replace(plan, costs=_choose(plan, shards, baseline, "shards"))


def block_shape(
    chunks: tuple[int, ...],
    shape: tuple[int, ...],
    itemsize: int,
    budget: int,
    first: tuple[int, ...] = (),
) -> tuple[int, ...]:
    """A block of whole ``chunks`` of at most ``budget`` bytes (at least one chunk), grown along
    the ``first`` axes, then the innermost axes first, up to the full axis."""
    budget = max(min(budget, MAX_BLOCK_BYTES), 1)
    chunk_bytes = math.prod(chunks) * itemsize
    multiples = max(budget // max(chunk_bytes, 1), 1)
    block = list(chunks)
    # grow in whole chunks up to the full axis: first along the ``first`` axes, then the innermost
    for i in list(first) + [i for i in reversed(range(len(block))) if i not in first]:
        c, size = chunks[i], shape[i]
        if multiples <= 1:
            break
        n_chunks = math.ceil(size / c)
        k = min(n_chunks, multiples)
        block[i] = min(c * k, size)
        multiples //= k
    return tuple(block)


def output_spec(plan: ExportPlan) -> OutputSpec:
    """The writer's view of ``plan``'s output, as the plan stands now (chunks are empty until
    they are planned)."""
    settings = plan.settings
    return OutputSpec(
        format=plan.writer.name,
        output=plan.output,
        internal=plan.internal,
        paths=tuple(plan.paths),
        shape=plan.shape,
        dtype=plan.dtype,
        axes=plan.axes,
        chunks=plan.chunks,
        shards=plan.shards,
        nbytes=plan.nbytes,
        compression=plan.writer.compression(settings.compression),
        compression_level=settings.compression_level,
        pixel_size=plan.pixel_size,
        unit=plan.unit,
        value_range=plan.value_range,
        nickname=plan.nickname,
        slice_axis=plan.slice_axis,
        slice_start=plan.slice_start,
        slice_template=plan.slice_template,
        staged=plan.staged,
        memory_limit=plan.memory_limit,
        workers=plan.workers,
        block_shape=functools.partial(block_shape, budget=plan.pyramid_budget()),
        tiff_flavor=settings.tiff_flavor,
        zarr_format=settings.zarr_format,
        levels=settings.levels,
        downsample=settings.downsample,
        result_type=settings.result_type,
        channel_names=plan.channel_names,
        origin={a: plan.roi[a][0] for a in plan.axes if a in plan.roi},
    )
