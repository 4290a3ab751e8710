"""ExportPlan: a source and settings -> the lazy result, its output chunks and blocks, the files.

Building a plan reads metadata only (one exception: renormalizing without an input range reads
the ROI once to find its min/max, and says so in ``plan.notes``). :func:`build_plan` makes it in
one pass of steps, each returning the (frozen) plan with its decisions added: the transformations
(:mod:`~lazyexport.plan_steps`), the outputs (:mod:`~lazyexport.plan_outputs`), and the blocks and
tasks in flight the cost model chooses (:mod:`~lazyexport.plan_chunks`, :mod:`lazyexport.cost`).
A plan can be inspected (``print(plan)``, :meth:`ExportPlan.summary`) before
:func:`lazyexport.run.execute` writes anything, and execution never changes it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from dask.utils import format_bytes

from . import cost, location, step_segment
from .axes import names
from .errors import SettingsError, redact
from .formats import Writer, get_writer
from .formats.options import values_for
from .formats.spec import OutputSpec
from .plan_chunks import MIN_CHUNK_BYTES as MIN_CHUNK_BYTES
from .plan_chunks import MIN_MEMORY_LIMIT as MIN_MEMORY_LIMIT
from .plan_chunks import STAGING_TIME as STAGING_TIME
from .plan_chunks import WORKER_ALLOWANCE as WORKER_ALLOWANCE
from .plan_chunks import (
    Pricing,
    choose_chunks,
    env_bytes,
    parse_memory_limit,
    plan_sequence,
    plan_shards,
    step_lines,
    steps_text,
)
from .plan_outputs import output_chunks, plan_outputs, plan_slices
from .plan_steps import aligned_chunks, pipeline, read_range, transform
from .plan_steps import cutout_reads as cutout_reads
from .plan_steps import read_through as read_through
from .plan_steps import steps as steps
from .plan_steps import value_steps as value_steps
from .roi import resolve_roi, roi_text
from .settings import ExportSettings
from .sources import open_source
from .sources.facts import source_facts
from .steps import Pipeline, Step
from .transforms import convert_block, dtype_range
from .units import DEFAULT_UNIT, to_micrometers

# The largest block (output bytes) a task writes, whatever the budget (tests set it small).
MAX_BLOCK_BYTES = env_bytes("LAZYEXPORT_MAX_BLOCK_BYTES", "1GiB")
# The block bytes aimed at (cost.evaluate: larger only where it saves time); 0: none.
BLOCK_TARGET_BYTES = env_bytes("LAZYEXPORT_BLOCK_TARGET", "32MiB")
ZARR_CONCURRENCY = 4  # chunks zarr-python decodes at once per read (set by the runner)
BLOCK_MEMORY_FACTOR = 6  # a pyramid level's block in flight, as a multiple (else: lazyexport.cost)


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
    # steps given to build_plan: after the cutout and the settings' steps, before conversion
    extra_steps: tuple[Step, ...] = ()

    @property
    def pipeline(self) -> Pipeline:
        """The steps from the source to :attr:`result` (:func:`lazyexport.plan_steps.pipeline`):
        block tasks run them on numpy blocks."""
        return pipeline(
            self.source, self.roi, self.settings, self.renormalize, self.order, self.extra_steps
        )

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
        are taken as they are), times the steps' scale (binning). Axes without one are left out:
        nothing is invented."""
        src = self.source.attrs
        src_unit, unit = src.get("unit"), self.unit
        factor = (
            to_micrometers(1.0, src_unit) / to_micrometers(1.0, unit) if src_unit and unit else 1.0
        )
        found = {a: v * factor for a, v in (src.get("pixel_size") or {}).items()}
        found.update(self.settings.pixel_size or {})
        scale = dict(zip(self.axes, self.pipeline.scale()))  # binned: larger pixels
        return {a: float(found[a]) * scale[a] for a in self.axes if a in found}

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
        previous = self.native_chunks() or tuple(max(c, default=1) for c in self.result.data.chunks)
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
            "arrays": [a.summary() for a in self.writer.arrays(self.spec)],  # pyramid levels
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
            "steps": [
                {"step": t, "reads_per_pixel": r, "holds": h} for t, r, h in step_lines(self)
            ],
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
            *(f"  level      {a}" for a in self.writer.arrays(self.spec)),  # pyramid levels
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
        lines += steps_text(self)
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
    steps: Sequence[Step] = (),
) -> ExportPlan:
    """Plan the export of ``source`` (anything :func:`open_source` takes) with ``settings``:
    ``memory_limit`` is the memory the export may add to the process, ``threads`` how many
    block tasks may run at once at most (default: the machine's cores). With ``workers`` (a dask
    cluster's, see :func:`lazyexport.run.cluster_workers`) blocks and tasks in flight are sized
    for its workers: all their threads, what they may add in all, and no task larger than what
    one of them may add. ``in_process``: the block
    tasks will be threads of one process (not processes or a cluster's workers), so a source
    read unit that straddles blocks is decoded once and kept for the blocks that need it.
    ``steps`` (:class:`lazyexport.steps.Step`) apply after the cutout, before conversion and
    transpose."""
    settings = settings or ExportSettings()
    steps = tuple(steps)
    if settings.regions:
        raise SettingsError(
            f"a plan covers one region, and these settings have {len(settings.regions)}: plan "
            "each (lazyexport.regions.region_settings), or give one ROI"
        )
    src = open_source(source)
    writer = get_writer(settings.format)
    limit = parse_memory_limit(memory_limit)
    threads = threads or os.cpu_count() or 1
    here = (threads, limit)  # what this process reads the data with when it must (a range)
    if workers is not None:
        limit, threads = workers.all_workers, workers.count * workers.threads
    nickname = nickname or str(src.attrs.get("nickname", "export"))

    roi = resolve_roi(settings.roi, names(src), src.shape)
    notes: list[str] = [str(workers)] if workers is not None else []
    renorm = None
    if settings.renormalize is not None:
        asked, out_range = settings.renormalize
        if asked is None or any(isinstance(v, str) for v in asked):
            in_range = read_range(src, roi, settings, steps, asked, notes, *here)
        else:
            in_range = (float(asked[0]), float(asked[1]))
        renorm = (in_range, out_range)
    result = transform(src, roi, settings, renorm, None, steps)
    # a format with an axis order of its own (ImageJ's TZCYX) gets one more transpose
    wanted = writer.axis_order(
        names(result), dict(zip(names(result), result.shape)), settings.axis_order
    )
    if wanted == "".join(names(result)):
        wanted = None
    if wanted is not None:
        result = transform(src, roi, settings, renorm, wanted, steps)
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
        extra_steps=steps,
    )
    # each step returns the plan with its decisions added (the plan itself is frozen)
    if writer.capabilities.sequence:
        plan = plan_slices(plan)
    plan = _stored_order(plan_outputs(plan))
    baseline = workers.baseline if workers is not None else cost.process_rss()
    pricing = Pricing(baseline, *read_model(src), MAX_BLOCK_BYTES, BLOCK_TARGET_BYTES)
    if writer.capabilities.sequence:
        return plan_sequence(plan, pricing)
    plan = dataclasses.replace(plan, chunks=output_chunks(plan, writer))
    if settings.shards is not None:
        return plan_shards(plan, pricing)
    return choose_chunks(plan, pricing)


def _stored_order(plan: ExportPlan) -> ExportPlan:
    """The result in the axis order the output stores (``Writer.stored_axes``, known once the
    output is: a TIFF's flavor may come from its name), so that the result's axes are the
    file's; a note says so where it is not the order asked."""
    stored = "".join(plan.writer.stored_axes(plan.spec))
    asked = "".join(plan.axes)
    if stored == asked:
        return plan
    result = transform(
        plan.source, plan.roi, plan.settings, plan.renormalize, stored, plan.extra_steps
    )
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


def block_shape(
    chunks: tuple[int, ...],
    shape: tuple[int, ...],
    itemsize: int,
    budget: int,
    first: tuple[int, ...] = (),
) -> tuple[int, ...]:
    """A block of whole ``chunks`` of at most ``budget`` bytes (at least one chunk), grown along
    the ``first`` axes, then the innermost axes first, up to the full axis."""
    budget = max(min(budget, MAX_BLOCK_BYTES, BLOCK_TARGET_BYTES or MAX_BLOCK_BYTES), 1)
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


def origin(plan: ExportPlan) -> dict[str, float]:
    """:attr:`OutputSpec.origin`: the cutout's start (binned: a window's centre, over the
    factor) per output axis of the source's, in output pixels."""
    pipeline = plan.pipeline
    found = zip(pipeline.axes, pipeline.origin(), pipeline.scale())
    return {a: at / f if at % f else int(at // f) for a, at, f in found if a in plan.roi}


def output_spec(plan: ExportPlan) -> OutputSpec:
    """The writer's view of ``plan``'s output as the plan stands (chunks: empty until planned)."""
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
        blocks=plan.blocks if plan.costs is not None else (),
        stepped=plan.costs is not None and plan.costs.stepped,
        zarr_format=settings.zarr_format,
        result_type=settings.result_type,
        labels=step_segment.label_names(plan.pipeline.steps),
        channel_names=plan.channel_names,
        origin=origin(plan),
        scale=dict(zip(plan.pipeline.axes, plan.pipeline.scale())),
        options=values_for(plan.writer, settings.options),
    )
