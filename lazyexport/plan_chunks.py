"""The block shape of a plan: the cheapest one the cost model (:mod:`lazyexport.cost`) finds
within the memory budget, for the output's chunks, a sequence's slices or the shards.

Blocks are whole output chunks (or shards), so no two tasks write one chunk. Where the plan's
pipeline has steps beyond the cutout and maps of values and axes (a bin, a halo, an axis
removed), the cost model is told what an output block really reads, from the pipeline
(:meth:`~lazyexport.steps.Pipeline.source_region`: :class:`PipelineReach` per axis) and what
its steps hold (:func:`step_work`); without such steps nothing is asked of it and the plans
are those of a cutout. A bin's block covers whole windows (an output pixel is one window). A
plan whose
smallest block does not fit the budget is refused with the smallest memory limit that works; the
planner's own chunks (not the user's) are first made smaller, down to ``MIN_CHUNK_BYTES``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from dask.utils import format_bytes, parse_bytes

from . import cost
from .axes import names
from .errors import MemoryLimitError, SettingsError
from .formats.spec import OutputSpec
from .plan_outputs import output_chunks
from .plan_steps import read_through, reads_into_block
from .steps import Pipeline
from .transforms import compute_dtype

DEFAULT_MEMORY_LIMIT = 2**30
# the smallest memory limit an export takes
MIN_MEMORY_LIMIT = 16 * 2**20


def parse_memory_limit(value: Any) -> int:
    """A memory limit in bytes from a number or text such as 512MiB (None: the default)."""
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


def env_bytes(name: str, default: str) -> int:
    """A size in bytes from the environment variable ``name`` (e.g. 32MiB; 0 or more), else
    ``default``; a refusal in one line names the variable where it cannot be read."""
    text = os.environ.get(name, default)
    try:
        value = int(parse_bytes(text))
    except (ValueError, TypeError):
        value = -1
    if value < 0:
        raise SettingsError(f"cannot read {name}={text!r}; write a size such as 32MiB (or 0)")
    return value


# what a cluster's worker may hold beyond its even share of the budget: its interpreter and
# the libraries it imports (a local-cluster worker's limit has room for its share + this)
WORKER_ALLOWANCE = 256 * 2**20
# The extra time of a staged slice sequence (the output written to and read from disk once more).
STAGING_TIME = 0.5
MIN_CHUNK_BYTES = 64 * 2**10  # the planner's own output chunks are not made smaller than this
# A writer's default shards (Writer.shard_bytes) apply where the output has more chunks than
# this: fewer are few files already, and each would be one task (no parallel blocks).
FEW_FILES = 100

# A lazyexport.plan.ExportPlan (not imported: lazyexport.plan imports this module).
Plan = Any


@dataclasses.dataclass(frozen=True)
class Pricing:
    """What pricing a block shape takes beside the plan: the memory the process (or the busiest
    worker) holds now, how the source reads and its read-unit boundaries per source axis
    (:func:`lazyexport.plan.read_model`), and the largest block one task may write."""

    baseline: int
    source: cost.Source
    bounds: dict[str, tuple[int, ...] | None]
    max_block_bytes: int
    block_target: int = 0  # the block bytes beyond which a block costs its excess (cost.evaluate)


class PipelineReach:
    """The source extent of output intervals along the output axis ``index`` (None: a source
    axis the output drops) for the source axis ``source`` (its position), asked of the
    pipeline (each interval once): :class:`lazyexport.cost.Reach`."""

    def __init__(self, pipeline: Pipeline, index: int | None, source: int):
        self.pipeline, self.index, self.source = pipeline, index, source
        self.base = [slice(0, 1) for _ in pipeline.shape]
        self.known: dict[tuple[int, int], tuple[int, int]] = {}

    def interval(self, a: int, b: int) -> tuple[int, int]:
        if (a, b) not in self.known:
            region = list(self.base)
            if self.index is not None:
                region[self.index] = slice(a, b)
            s = self.pipeline.source_region(tuple(region))[self.source]
            self.known[(a, b)] = (s.start, s.stop)
        return self.known[(a, b)]

    def span(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = [self.interval(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        lo, hi = np.array(found, dtype=np.int64).reshape(-1, 2).T
        return lo, hi


def _middle(pipeline: Pipeline, block: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shape of each step's input, then of the output, for a block of ``block`` (output
    axes) in the middle of the output (where a halo is whole)."""
    region = tuple(
        slice(s, min(s + b, n))
        for n, b in zip(pipeline.shape, block)
        for s in [max(n // 2 // max(b, 1) * b, 0)]
    )
    return [tuple(s.stop - s.start for s in r) for r in pipeline.regions(region)]


def step_costs(pipeline: Pipeline, block: tuple[int, ...]) -> list[tuple[int, float, int]]:
    """Per step (its index): the input pixels it reads per output pixel and the bytes it holds
    (its input if an earlier step made it, its output, its own scratch:
    :meth:`~lazyexport.steps.Step.work`) for a block of ``block``; none for the cutout's and
    transpose's views."""
    sizes = _middle(pipeline, block)
    found = []
    views = True  # the steps so far only view the source region (counted as the piece)
    for k, step in enumerate(pipeline.steps):
        if step.kind in ("window", "axes"):
            continue
        given = 0 if views else math.prod(sizes[k]) * pipeline.dtypes[k].itemsize
        views = False
        made = math.prod(sizes[k + 1]) * pipeline.dtypes[k + 1].itemsize
        reads = math.prod(sizes[k]) / max(math.prod(sizes[k + 1]), 1)
        found.append((k, reads, given + made + step.work(sizes[k], pipeline.dtypes[k])))
    return found


def step_lines(plan: Plan) -> list[tuple[str, float | None, int | None]]:
    """Each step of the plan's pipeline: its description (:meth:`Step.describe`), and where the
    block tasks run the steps on whole blocks (not piecewise), the input pixels it reads per
    output pixel and the bytes it holds per task for the plan's block (None otherwise)."""
    pipeline = plan.pipeline
    costs = [] if pipeline.piecewise() else step_costs(pipeline, plan.block)
    known = {k: (reads, held) for k, reads, held in costs}
    return [(step.describe(), *known.get(k, (None, None))) for k, step in enumerate(pipeline.steps)]


def steps_text(plan: Plan) -> list[str]:
    """The lines of ``--plan`` that show the steps (:func:`step_lines`)."""
    shown = step_lines(plan)
    return ["  steps      " + " -> ".join(text for text, _, _ in shown)] + [
        f"  step       {text}: reads {reads:.2f} input pixels per output pixel, holds "
        f"{format_bytes(held)} per task"
        for text, reads, held in shown
        if reads is not None and held is not None
    ]


def step_work(pipeline: Pipeline, block: tuple[int, ...]) -> int:
    """What the steps hold beside the source region and the block while a task runs them on a
    block of ``block``: the most any step holds (:func:`step_costs`). (The result made
    contiguous is the task's block, which the cost model counts as ``out``.)"""
    return max((b for _, _, b in step_costs(pipeline, block)), default=0)


def _cost_axes(
    plan: Plan,
    pricing: Pricing,
    unit: tuple[int, ...],
    aligned: tuple[bool, ...] = (),
    steps: tuple[int, ...] = (),
) -> list[cost.Axis]:
    """The cost model's axes: the output's, then the source axes the output drops (length 1);
    each with a :class:`PipelineReach` where the pipeline is not piecewise, and the ``steps``
    blocks start at multiples of (``Writer.block_steps``; (): any)."""
    bounds = pricing.bounds
    dims = names(plan.source)
    sizes = dict(zip(dims, plan.source.shape))
    pipeline = plan.pipeline
    general = not pipeline.piecewise()

    def reach(index: int | None, axis: str) -> PipelineReach | None:
        return PipelineReach(pipeline, index, dims.index(axis)) if general else None

    axes = []
    for i, (a, n, u) in enumerate(zip(plan.axes, plan.shape, unit)):
        follow = aligned[i] if aligned else False
        step = steps[i] if steps else 1
        if a in sizes:
            axes.append(
                cost.Axis(a, n, u, plan.roi[a][0], sizes[a], bounds[a], follow, reach(i, a), step)
            )
        else:
            axes.append(cost.Axis(a, n, 1, step=step))
    for d in dims:
        if d not in plan.axes:
            axes.append(
                cost.Axis(d, 1, 1, plan.roi[d][0], sizes[d], bounds[d], reach=reach(None, d))
            )
    return axes


def _work(plan: Plan) -> Callable[[tuple[int, ...]], int] | None:
    """:func:`step_work` for the plan's blocks where the pipeline is not piecewise (else None)."""
    pipeline = plan.pipeline
    if pipeline.piecewise():
        return None
    n = len(plan.axes)
    return lambda block: step_work(pipeline, tuple(block[:n]))


def _encode_bytes(
    plan: Plan,
    spec: OutputSpec,
    block: tuple[int, ...],
    unit: tuple[int, ...],
    staged: bool = False,
    stepped: bool = False,
) -> int:
    """What the writer holds on top of the block while it writes it (see Writer.write_buffers),
    or, for blocks at the writer's block steps (``stepped``), after it, making more of the output
    from it (Writer.block_work), whichever is more."""
    itemsize = plan.dtype.itemsize
    out = math.prod(block[: len(plan.axes)]) * itemsize
    if plan.writer.capabilities.sequence:
        pos = plan.axes.index(plan.slice_axis)
        plane = math.prod(n for i, n in enumerate(plan.shape) if i != pos) * itemsize
        return plan.writer.write_buffers(out, plane, staged=staged, spec=spec)
    buffers = plan.writer.write_buffers(out, math.prod(unit) * itemsize, spec=spec)
    if not stepped:
        return buffers
    return max(buffers, plan.writer.block_work(spec, tuple(block[: len(plan.axes)])))


def _choose(
    plan: Plan,
    unit: tuple[int, ...],
    pricing: Pricing,
    what: str,
    aligned: tuple[bool, ...] = (),
    staged: bool = False,
    time_extra: float = 0.0,
    steps: tuple[int, ...] | None = None,
) -> cost.Costs:
    """The cheapest block shape made of whole ``unit`` s that fits the budget, or a one-line
    refusal naming what does not fit (``what``: the user's word for ``unit``). Blocks start at
    multiples of ``steps`` (per axis; (): anywhere); None: where the writer wants blocks at its
    ``block_steps`` (an OME-Zarr's level 1 made in the same pass), such blocks first, and where
    none fits, any (the plan's arrays say which)."""
    if steps is None:
        wanted = plan.writer.block_steps(plan.spec) if plan.chunks else ()
        if wanted:
            with contextlib.suppress(MemoryLimitError):
                found = _choose(plan, unit, pricing, what, aligned, staged, time_extra, wanted)
                return dataclasses.replace(found, stepped=True)
        steps = ()
    # Where the writer encodes chunks straight from the block, blocks that hold chunks whole
    # save copies (cost.COPY_COST), on the reading side too where the source's chunks decode
    # straight into it. Elsewhere none is counted: a writer of a block's rows into one file (npy,
    # TIFF) wants wide blocks instead, which the model does not count either.
    # (shards "auto" are the block chosen here: the chunks are not what is written)
    encodes_in_place = plan.settings.shards != "auto" and plan.writer.encodes_in_place(plan.spec)
    reader = read_through(plan.source)
    in_place = (
        encodes_in_place
        and getattr(reader, "decodes_in_place", False)
        and reads_into_block(
            reader, plan.pipeline, names(plan.source), plan.axes, plan.source.dtype, plan.dtype
        )
    )
    source = dataclasses.replace(pricing.source, shared=plan.in_process, in_place=in_place)
    axes = _cost_axes(plan, pricing, unit, aligned, steps)
    unit = tuple(unit) + (1,) * (len(axes) - len(unit))
    compute = compute_dtype(plan.source.dtype).itemsize if plan.renormalize else 0

    hosts = plan.cluster.count if plan.cluster is not None else 1
    spec = plan.spec

    def choose(budget: int, host_budget: int | None = None) -> cost.Costs:
        return cost.choose(
            axes,
            source,
            plan.dtype.itemsize,
            compute_itemsize=compute,
            encode=lambda block: _encode_bytes(plan, spec, block, unit, staged, bool(steps)),
            budget=budget,
            baseline=pricing.baseline,
            threads=plan.workers,
            max_block_bytes=pricing.max_block_bytes,
            block_target=min(pricing.block_target, pricing.max_block_bytes),
            time_extra=time_extra,
            hosts=hosts,
            host_budget=host_budget,
            work=work,
            encodes_in_place=encodes_in_place,
        )

    work = _work(plan)
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
    raise MemoryLimitError(_no_fit(plan, pricing, failure, needed, unit, what)) from None


def _no_fit(
    plan: Plan, pricing: Pricing, exc: cost.NoFit, needed: int, unit: tuple[int, ...], what: str
) -> str:
    need = format_bytes(needed)
    limit = format_bytes(plan.memory_limit)
    if plan.cluster is not None:
        limit += (
            f" (up to {format_bytes(plan.cluster.budget)} on one of the cluster's "
            f"{plan.cluster.count} workers)"
        )
        need += " (on one worker: give the workers that much room under their memory limit)"
    bounds = pricing.bounds
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


def planner_chunks(plan: Plan, chunk_bytes: int) -> tuple[int, ...]:
    """The planner's own chunk shape of about ``chunk_bytes``: the one that follows the source's
    chunks (:meth:`ExportPlan.default_chunks`), unless the writer's output is viewed as a volume
    (``Writer.volume_chunks``: ome-zarr) and those chunks are thin planes (their z length under a
    quarter of their y and x lengths, as from a page-chunked TIFF): then near-cubic chunks
    (:func:`cubic_chunks`)."""
    found = plan.default_chunks(chunk_bytes)
    if plan.settings.chunks or not getattr(plan.writer, "volume_chunks", False):
        return found
    length = {a: (n, c) for a, n, c in zip(plan.axes, plan.shape, found)}
    if any(a not in length or length[a][0] == 1 for a in "zyx"):
        return found  # not a volume: one plane deep, as the source's chunks give
    (_, z), (_, y), (_, x) = length["z"], length["y"], length["x"]
    if 4 * z >= min(y, x):
        return found
    keep = {i: c for i, (a, c) in enumerate(zip(plan.axes, found)) if a == "c"}
    return cubic_chunks(plan.axes, plan.shape, plan.dtype.itemsize, chunk_bytes, keep)


def doubled(
    axes: tuple[str, ...],
    start: tuple[int, ...],
    limit: tuple[int, ...],
    itemsize: int,
    nbytes: int,
    fixed: tuple[int, ...] = (),
) -> tuple[int, ...]:
    """``start`` with its z, y and x lengths (not those in ``fixed``) doubled in turn, the
    shortest first (the innermost on ties), each up to its ``limit``, while the shape holds at
    most ``nbytes``: near-cubic where the limits allow."""
    shape = list(start)
    spatial = [i for i, a in enumerate(axes) if a in "zyx" and i not in fixed]
    while True:
        room = [
            i
            for i in spatial
            if shape[i] < limit[i]
            and math.prod(shape) // shape[i] * min(2 * shape[i], limit[i]) * itemsize <= nbytes
        ]
        if not room:
            return tuple(shape)
        i = min(room, key=lambda j: (shape[j], -j))
        shape[i] = min(2 * shape[i], limit[i])


def cubic_chunks(
    axes: tuple[str, ...],
    shape: tuple[int, ...],
    itemsize: int,
    nbytes: int,
    keep: Mapping[int, int],
) -> tuple[int, ...]:
    """Chunks of at most ``nbytes`` (at least one pixel), near-cubic in z, y and x
    (:func:`doubled` from 1: a cube of a power of two where the shape allows). Axes in ``keep``
    keep their length; the others are 1."""
    start = tuple(keep.get(i, 1) for i in range(len(axes)))
    return doubled(axes, start, shape, itemsize, nbytes, tuple(keep))


def _with_planner_chunks(plan: Plan) -> Plan:
    """``plan`` with :func:`planner_chunks` where the planner chooses the chunks."""
    if plan.settings.chunks or not getattr(plan.writer, "volume_chunks", False):
        return plan
    return dataclasses.replace(plan, chunks=planner_chunks(plan, plan.writer.chunk_bytes))


def choose_chunks(plan: Plan, pricing: Pricing) -> Plan:
    """Blocks for the output chunks; chunks the planner chose itself (not the user's) are made
    smaller, down to MIN_CHUNK_BYTES, where the budget cannot hold one. A writer with default
    shards (``Writer.shard_bytes``) on Zarr v3 without a ``shards`` setting then gets them
    (:func:`default_shards`) where the output has more than ``FEW_FILES`` chunks."""
    plan = _with_planner_chunks(plan)
    while True:
        try:
            plan = dataclasses.replace(
                plan, costs=_choose(plan, plan.chunks, pricing, what="chunks")
            )
            break
        except MemoryLimitError:
            size = math.prod(plan.chunks) * plan.dtype.itemsize
            if plan.settings.chunks or size <= MIN_CHUNK_BYTES:
                raise
            smaller = planner_chunks(plan, size // 2)
            if smaller == plan.chunks:
                raise
            plan = dataclasses.replace(plan, chunks=smaller)
    target = getattr(plan.writer, "shard_bytes", None)
    if (
        target
        and plan.settings.shards is None
        and plan.settings.zarr_format == 3
        and shard_files(plan.shape, plan.chunks) > FEW_FILES
    ):
        return default_shards(plan, pricing, target)
    return plan


def grown_shards(
    axes: tuple[str, ...],
    chunks: tuple[int, ...],
    shape: tuple[int, ...],
    itemsize: int,
    nbytes: int,
) -> tuple[int, ...]:
    """A shard of whole ``chunks`` of at most ``nbytes`` (uncompressed), near-cubic in z, y and x
    (:func:`doubled` from one chunk, each axis up to the whole chunks that cover it); other axes
    one chunk."""
    cover = tuple(math.ceil(n / c) * c for n, c in zip(shape, chunks))
    return doubled(axes, chunks, cover, itemsize, nbytes)


def shard_files(shape: tuple[int, ...], shards: tuple[int, ...]) -> int:
    """How many shard files an array of ``shape`` in ``shards`` has (where every one is written)."""
    return math.prod(math.ceil(n / s) for n, s in zip(shape, shards))


def default_shards(plan: Plan, pricing: Pricing, target: int) -> Plan:
    """The writer's default shards (:func:`grown_shards` up to ``target`` bytes), halved while
    one task's shard does not fit the memory budget; none (a note) where a shard would be one
    chunk. The pyramid levels of an OME-Zarr take the same shape, clipped to each level."""
    itemsize = plan.dtype.itemsize
    while True:
        shards = grown_shards(plan.axes, plan.chunks, plan.shape, itemsize, target)
        if shards == plan.chunks:
            note = "shards: a shard would be one chunk, so the output is not sharded"
            return dataclasses.replace(plan, notes=plan.notes + (note,))
        sharded = dataclasses.replace(plan, shards=shards)
        try:
            costs = _choose(sharded, shards, pricing, "shards")
        except MemoryLimitError:
            target = math.prod(shards) * itemsize // 2
            continue
        files = shard_files(plan.shape, shards)
        note = (
            f"shards of {shards} ({format_bytes(math.prod(shards) * itemsize)} each, {files} "
            f"file{'s' if files > 1 else ''} at full resolution; --shards none for one file "
            "per chunk)"
        )
        return dataclasses.replace(sharded, costs=costs, notes=plan.notes + (note,))


def plan_sequence(plan: Plan, pricing: Pricing) -> Plan:
    """Slices are written straight from blocks of whole planes when the slab of slices one
    source read unit spans fits the budget; else blocks follow the source and slices are
    assembled in a staging file on disk (one more write and read of the output)."""
    pos = plan.axes.index(plan.slice_axis)
    plane = output_chunks(plan, plan.writer)
    plan = dataclasses.replace(plan, chunks=plane)
    follow = tuple(i == pos for i in range(len(plan.axes)))
    direct = staged = None
    with contextlib.suppress(MemoryLimitError):
        direct = _choose(plan, plane, pricing, "slices", aligned=follow)
    if direct is None or direct.amplification > 1.05:
        ones = (1,) * len(plan.axes)
        with contextlib.suppress(MemoryLimitError):
            staged = _choose(plan, ones, pricing, "slices", staged=True, time_extra=STAGING_TIME)
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
        direct = _choose(plan, plane, pricing, "slices", aligned=follow)  # raises the refusal
    return dataclasses.replace(plan, costs=direct)


def plan_shards(plan: Plan, pricing: Pricing) -> Plan:
    """The shard shape. ``"none"``: none (not even a writer's default). ``"auto"``: the block
    the cost model picks for the chunks (no shards if that is one chunk). Else the user's
    lengths, rounded up to whole chunks, one shard across an axis at most; a shard is written by
    one task, and one that cannot fit the budget is refused."""
    if plan.settings.shards == "none":
        return choose_chunks(plan, pricing)
    plan = _with_planner_chunks(plan)
    chunks, shape = plan.chunks, plan.shape
    wanted = plan.settings.shards
    if wanted == "auto":
        costs = _choose(plan, chunks, pricing, "chunks")
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
    return dataclasses.replace(plan, costs=_choose(plan, shards, pricing, "shards"))
