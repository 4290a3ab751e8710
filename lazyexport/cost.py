"""The planner's cost model: what a block shape costs in memory, decoded bytes and time.

An export runs as *block tasks*. A task owns one block of the output (whole output chunks or
shards, or whole planes of a slice sequence), and fills it *piece by piece*: a piece is a
group of whole source read units (a chunk, a page, an inner chunk of a shard) inside the
block, read once, transformed in small sub-slabs into the block's output buffer, then dropped.
When the block is complete the task hands it to the writer. So one task holds at most:

- ``out``: the block in the output dtype;
- ``piece``: one piece in the source dtype, plus what reading it needs on top (a whole chunk
  decoded to take part of it, the compressed bytes, the chunks a dask source computes);
- ``transform``: the temporaries of one sub-slab (a float copy for renormalize, the converted
  copy), bounded by :data:`SUBSLAB_BYTES`;
- ``encode``: while the block is written, the writer's buffers (a chunk or a plane copied and
  compressed), as the writer declares them.

``tasks in flight`` = min(threads, tasks, (budget - shared) // task peak): the budget is what the
export may add to the process. ``shared``: where tasks are threads of one process
(``Source.shared``), a read unit that straddles block edges is decoded once and kept for the
other blocks that need it (:class:`lazyexport.blocks.SharedReads`); blocks run in C order, so at
most one layer of such units is kept per axis. The projected peak is the baseline (what the
process holds when the export is planned: the interpreter, its libraries, the caller's data) +
tasks in flight × task peak + shared. On a cluster, ``hosts`` workers each take at most
``host_budget`` and the projected peak is one worker's. Read amplification is the source
bytes decoded / the bytes of the source read units the cutout touches (each must be decoded
once): a block boundary inside a read unit makes two tasks decode it.

Where the pipeline has a step that is not a cutout, a map of values or of axes (a bin, a halo,
an axis removed: :meth:`lazyexport.steps.Pipeline.piecewise` is false), a block's source region
is not the block moved by the cutout's start: each axis then has a :class:`Reach` (the source
extent of an output interval, asked of the pipeline) and a task reads its block's source
region whole and runs the steps on it (:mod:`lazyexport.blocks`): ``piece`` is that region,
``transform`` the steps' intermediate arrays and scratch (``work``). :func:`choose` picks the block
shape with the smallest estimated time (decoded and written bytes over the tasks that run at once,
plus the largest task, plus a cost per task) among
those whose projected peak fits the budget; if none fits it raises :class:`NoFit` with the
smallest budget that would.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

SUBSLAB_BYTES = 4 * 2**20  # source bytes transformed at once inside a piece
PIECE_BYTES = 16 * 2**20  # pieces grow (in whole read units) to about this size
# the time cost of one task, as bytes moved (scheduling, files, metadata)
TASK_OVERHEAD_BYTES = 2 * 2**20
# the time of taking a part of a read unit another block read (Source.shared), as a share of
# decoding it: a unit on a block edge is read by one block and kept for a later one (a copy);
# blocks shorter than a read unit read the same units at the same time, and wait (counted in full)
SHARED_READ_COST = 0.1
# the time of copying a byte, as a share of decoding it and encoding it again: where chunks are
# decoded and encoded in place (Source.in_place, evaluate's encodes_in_place), a read unit
# (chunk) that is not one contiguous run of its block is decoded into a scratch and copied in,
# and an output chunk that is not is copied out before it is encoded. Measured on the 4 GiB
# Zarr copy of benchmarks/limit.py (zstd-3, blocks of 16x1024x2048 holding chunks of
# 16x256x256): the two copies took 4.3 % of its CPU for 8 GiB moved, zstd 76 % for its 4 GiB
# decoded and 4 GiB encoded.
COPY_COST = 0.05
BALANCE_TASKS = 4  # tasks per thread below which the largest task's time counts
MAX_CANDIDATES = 4000  # block shapes tried exhaustively; beyond, grown greedily


class NoFit(Exception):
    """No block shape fits the budget; ``needed`` is the smallest budget that would do."""

    def __init__(self, needed: int, unit_bytes: int):
        super().__init__(needed)
        self.needed, self.unit_bytes = needed, unit_bytes


class Reach(Protocol):
    """The source extent of output intervals along one axis (absolute source coordinates)."""

    def span(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per block between ``edges`` (output coordinates): its source region's start and stop."""
        ...


@dataclasses.dataclass(frozen=True)
class Axis:
    """One axis of the cost model, in output order (source axes the output drops come last,
    with ``length`` 1).

    ``length``: output length; ``unit``: the write unit (blocks are whole multiples of it, or
    reach the end); ``aligned``: the block grid may start with a short block so that blocks
    follow the source's read units (allowed where the write unit is 1); ``start``: the cutout's
    start in the source; ``size``: the source's length; ``bounds``: the source's read-unit
    boundaries (None: any region is read as it is, e.g. a memory map or an in-memory array);
    ``reach``: where a block's source region is not the block moved by ``start`` (see the
    module's docstring), the source extent of output intervals; ``step``: block lengths are
    multiples of it too, or reach the end (a writer that makes more in the block task:
    :meth:`lazyexport.formats.base.Writer.block_steps`)."""

    name: str
    length: int
    unit: int
    start: int = 0
    size: int = 1
    bounds: tuple[int, ...] | None = None
    aligned: bool = False
    reach: Reach | None = dataclasses.field(default=None, compare=False)
    step: int = 1

    # (cached: the properties below are asked for in every candidate's cost)
    @functools.cached_property
    def edges(self) -> np.ndarray | None:
        """``bounds`` as an array (None where any region is read as it is)."""
        return None if self.bounds is None else np.asarray(self.bounds, dtype=np.int64)

    @functools.cached_property
    def needed(self) -> int:
        """The source extent of the read units the cutout touches along this axis."""
        return int(_touched(self, np.array([0, self.length]))[1][0])

    @functools.cached_property
    def read_unit(self) -> int:
        """The longest read unit along this axis (1 where any region is read as it is)."""
        if self.edges is None or len(self.edges) < 2:
            return 1
        return int(np.diff(self.edges).max())


@dataclasses.dataclass(frozen=True)
class Source:
    """How the source reads: ``kind`` ``"view"`` (an array in memory: a region is a view),
    ``"chunks"`` (a file read by read units, each decoded whole; ``concurrency`` decoded at
    once), or ``"dask"`` (a dask graph that computes whole chunks); the itemsize, whether its
    read units are compressed."""

    kind: str
    itemsize: int
    concurrency: int = 1
    compressed: bool = True
    # read units that straddle block edges are decoded once and kept for the other blocks that
    # read them (tasks of one process)
    shared: bool = False
    # a read unit that is one contiguous run of the block is decoded straight into it (the
    # others into a scratch, then copied in); False: no such copies are counted
    in_place: bool = False


@dataclasses.dataclass(frozen=True)
class Costs:
    """The cost of one block shape; bytes unless said otherwise."""

    block: tuple[int, ...]  # per cost axis (the output's, then the source axes it drops)
    phase: tuple[int, ...]  # length of the first (short) block per axis, 0: none
    piece: tuple[int, ...]  # the longest piece per axis (source elements)
    tasks: int
    in_flight: int
    task_peak: int
    out: int
    piece_bytes: int
    read_extra: int
    transform: int
    encode: int
    baseline: int
    decoded: int  # source bytes decoded in all
    needed: int  # source bytes of the read units the cutout touches
    written: int  # output bytes
    seconds: float  # relative time estimate (only for comparing shapes)
    shared: int = 0  # read units kept for the next blocks, at most (Source.shared)
    per_host: int = 0  # tasks one process (a cluster's worker) runs at once, at most
    stepped: bool = False  # chosen among blocks at the writer's block steps (Axis.step)

    @property
    def projected_peak(self) -> int:
        """The peak of one process: its baseline, its tasks in flight, the read units it keeps."""
        return (
            self.baseline
            + min(self.in_flight, self.per_host or self.in_flight) * self.task_peak
            + self.shared
        )

    @property
    def amplification(self) -> float:
        return self.decoded / self.needed if self.needed else 1.0


def block_edges(length: int, block: int, phase: int = 0) -> np.ndarray:
    """Block edges along an axis of ``length``: 0, (phase,) phase + block, ..., length."""
    starts = np.arange(phase, length, max(block, 1), dtype=np.int64)
    return np.unique(np.concatenate(([0], starts, [length])))


def _touched(axis: Axis, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block along ``axis``: the length of its source region, the source extent of the read
    units it touches, and whether it covers them exactly (no partial read unit)."""
    if axis.reach is None:
        lo, hi = edges[:-1] + axis.start, edges[1:] + axis.start
    else:
        lo, hi = axis.reach.span(edges)
    bounds = axis.edges
    if bounds is None:
        return hi - lo, hi - lo, np.ones(len(lo), bool)
    first = np.searchsorted(bounds, lo, side="right") - 1
    last = np.searchsorted(bounds, hi - 1, side="right") - 1
    extent = bounds[last + 1] - bounds[first]
    exact = (bounds[first] == lo) & (bounds[last + 1] == hi)
    return hi - lo, extent, exact


def _phase(axis: Axis, block: int) -> int:
    """The first block's length where the grid may follow the source's read units: up to the
    first read-unit boundary after the cutout's start (0: the grid starts at 0)."""
    bounds = axis.edges
    if not axis.aligned or bounds is None or axis.reach is not None:
        return 0
    if axis.start in bounds:  # the cutout starts on a read-unit edge: blocks from 0 follow them
        return 0
    after = bounds[bounds > axis.start]
    first = int(after[0]) - axis.start if len(after) else 0
    return first % block if block and first < axis.length else 0


def scratch_bytes(budget: int) -> tuple[int, int]:
    """The piece and sub-slab sizes aimed at under ``budget``: PIECE_BYTES and SUBSLAB_BYTES,
    smaller where the budget is small."""
    return min(PIECE_BYTES, max(budget // 8, 2**20)), min(SUBSLAB_BYTES, max(budget // 32, 2**18))


def _piece_shape(
    axes: Sequence[Axis], extents: Sequence[int], itemsize: int, target: int
) -> tuple[int, ...]:
    """A piece: whole read units, grown innermost first to about ``target`` bytes, within the
    block."""
    piece = [min(a.read_unit, e) if a.bounds is not None else 1 for a, e in zip(axes, extents)]
    for i in reversed(range(len(piece))):
        while piece[i] < extents[i] and math.prod(piece) * itemsize < target:
            step = axes[i].read_unit if axes[i].bounds is not None else piece[i]
            piece[i] = min(piece[i] + step, extents[i])
    return tuple(piece)


def evaluate(
    axes: Sequence[Axis],
    block: Sequence[int],
    source: Source,
    out_itemsize: int,
    *,
    compute_itemsize: int,
    encode: int,
    budget: int,
    baseline: int,
    threads: int,
    time_extra: float = 0.0,
    hosts: int = 1,
    host_budget: int | None = None,
    work: Callable[[tuple[int, ...]], int] | None = None,
    block_target: int = 0,
    encodes_in_place: bool = False,
) -> Costs:
    """The costs of blocks of shape ``block`` (one length per axis). ``budget`` and ``threads``
    are for all tasks together; on ``hosts`` processes (a cluster's workers, ``threads`` spread
    evenly) a task must also fit what one of them may add, ``host_budget``. ``work``: where
    a task reads its block's source region whole and runs the pipeline's steps on it, what
    they hold beside it for a block (the module's docstring); None: piece by piece.
    ``encodes_in_place``: the writer encodes an output chunk that is one contiguous run of the
    block straight from it (the others after a copy)."""
    phases = tuple(_phase(a, b) for a, b in zip(axes, block))
    lengths, sources, extents, exacts, counts, wholes, seams, factors = ([] for _ in range(8))
    decoded = 1
    for axis, b, p in zip(axes, block, phases):
        edges = block_edges(axis.length, b, p)
        length, extent, exact = _touched(axis, edges)
        lengths.append(int(np.diff(edges).max()))
        sources.append(int(length.max()))
        extents.append(int(extent.max()))
        exacts.append(bool(exact.all()))
        counts.append(len(length))
        seams.append(_splits_units(axis, edges))
        decoded *= int(extent.sum())
        wholes.append(axis.needed)
        share = 1.0 if b < axis.read_unit else SHARED_READ_COST
        factors.append(1.0 + (extent.sum() / wholes[-1] - 1.0) * share)
    needed = math.prod(wholes)
    isz = source.itemsize
    piece_target, subslab = scratch_bytes(budget)
    tasks = math.prod(counts)
    out = math.prod(lengths) * out_itemsize
    if source.kind == "view":
        piece = read_extra = 0
        piece_elems = math.prod(sources)
        shape = tuple(sources)
    else:
        # piece by piece, or the block's whole source region
        shape = _piece_shape(axes, extents, isz, piece_target) if work is None else tuple(sources)
        piece = math.prod(shape) * isz
        piece_elems = math.prod(shape)
        unit = math.prod(min(a.read_unit, e) for a, e in zip(axes, extents)) * isz
        # partial units decode whole into a scratch; compressed bytes beside
        if source.kind == "chunks":
            partial = unit if not all(exacts) else 0
            raw = unit // 2 if source.compressed else unit
            read_extra = source.concurrency * (partial + raw)
        else:  # dask: chunks computed one at a time, sliced into the piece
            read_extra = unit if not all(exacts) or piece > unit else 0
    sub = min(piece_elems, max(subslab // isz, 1))
    transform = (
        sub * (compute_itemsize + out_itemsize + isz) if work is None else work(tuple(block))
    )
    task_peak = max(out + piece + read_extra + transform, out + encode)
    host_budget = budget if host_budget is None else host_budget
    per_host = min(max(threads // hosts, 1), host_budget // task_peak if task_peak else threads)
    written = math.prod(a.length for a in axes) * out_itemsize
    # the tail: with fewer than BALANCE_TASKS per thread the last tasks run while other threads
    # are done, on the order of the largest task; so small exports are cut into enough tasks
    # while large ones use the budget (their peak then does not grow with the volume)
    largest = math.prod(extents) * isz + out if tasks < BALANCE_TASKS * threads else 0
    # bytes copied between the block and chunks that are not contiguous runs of it (COPY_COST),
    # where the others are decoded or encoded in place: output chunks, and source read units
    # (each decoded, ``reread`` below), which a partial one always is
    written_copied = (
        written if encodes_in_place and _strided([a.unit for a in axes], lengths) else 0
    )
    reads_copied = (
        source.in_place
        and source.kind == "chunks"
        and (not all(exacts) or _strided([a.read_unit for a in axes], sources))
    )
    # a block beyond ``block_target`` bytes costs its excess: measured, larger blocks were not
    # faster (1.1-1.3x slower at 256 MiB than at 32 MiB) and held more memory, so a block grows
    # past the target only where that saves more, e.g. re-decoding read units it would split
    beyond = max(out - block_target, 0) if block_target else 0

    def variant(shared: int, reread: float) -> tuple[float, int, int]:
        """(seconds, tasks in flight, bytes kept) with ``shared`` bytes of read units kept and
        ``reread`` elements' worth of decoding time."""
        fit = (budget - shared) // task_peak if task_peak else threads
        in_flight = int(max(min(threads, tasks, fit, hosts * per_host), 0))
        par = max(min(in_flight, threads, tasks), 1)
        # the work shared by the tasks in flight, the tail, and a cost per task
        seconds = (
            (reread * isz * (1.0 + COPY_COST * reads_copied) + written + COPY_COST * written_copied)
            / par
            + largest
            + tasks * TASK_OVERHEAD_BYTES / par
            + beyond
        ) * (1.0 + time_extra)
        return (seconds if in_flight else math.inf), in_flight, shared

    # each task decodes what it touches; or, where tasks share read units (Source.shared) and
    # the units kept fit, each unit is decoded once and kept for the blocks that need it
    options = [variant(0, decoded)]
    if source.shared and source.kind != "view" and any(seams) and work is None:
        options.append(
            variant(_kept(axes, extents, wholes, seams) * isz, needed * math.prod(factors))
        )
    seconds, in_flight, shared = min(options, key=lambda o: (o[0], o[2]))
    if shared:
        decoded = needed
    return Costs(
        block=tuple(int(b) for b in block),
        phase=phases,
        piece=tuple(int(p) for p in shape),
        tasks=tasks,
        in_flight=in_flight,
        task_peak=int(task_peak),
        out=int(out),
        piece_bytes=int(piece),
        read_extra=int(read_extra),
        transform=int(transform),
        encode=int(encode),
        baseline=int(baseline),
        decoded=int(decoded * isz),
        needed=int(needed * isz),
        written=int(written),
        seconds=float(seconds),
        shared=int(shared),
        per_host=int(max(per_host, 0)),
    )


def _strided(unit: Sequence[int], box: Sequence[int]) -> bool:
    """Whether a read or write unit of shape ``unit`` at a corner of a C-order array of shape
    ``box`` is not one contiguous run of it: after its first axis longer than 1, an axis where
    the unit is shorter than the array."""
    unit = [min(u, b) for u, b in zip(unit, box)]
    first = next((i for i, u in enumerate(unit) if u > 1), len(unit))
    return any(u < b for u, b in zip(unit[first + 1 :], box[first + 1 :]))


def _splits_units(axis: Axis, edges: np.ndarray) -> bool:
    """Whether a block edge inside the cutout falls inside a read unit along ``axis``."""
    if axis.edges is None or len(edges) < 3:
        return False
    return not np.isin(edges[1:-1] + axis.start, axis.edges).all()


def _kept(
    axes: Sequence[Axis], extents: Sequence[int], wholes: Sequence[int], seams: Sequence[bool]
) -> int:
    """Elements of shared read units kept at most (Source.shared): blocks run in C order, so the
    read units on the far side of the blocks' edges along axis ``i`` wait for the blocks one step
    further along ``i`` -- one layer of read units, one block wide along the axes before ``i`` and
    the whole cutout along the axes after it."""
    kept = 0
    for i, axis in enumerate(axes):
        if not seams[i]:
            continue
        kept += min(axis.read_unit, wholes[i]) * math.prod(extents[:i]) * math.prod(wholes[i + 1 :])
    return kept


def candidates(axis: Axis, cap: int | None = None) -> list[int]:
    """Block lengths worth trying along ``axis``: whole write units, doubling, the multiples
    that match the read unit, and the whole axis."""
    unit, length = max(axis.unit, 1), axis.length
    found = {min(unit, length), length}
    k = 1
    while unit * k < length:
        found.add(unit * k)
        k *= 2
    read = axis.read_unit
    if read > 1:
        step = unit * read // math.gcd(unit, read)  # whole write units and whole read units
        for m in (1, 2, 4, 8):
            if step * m < length:
                found.add(step * m)
    if axis.step > 1:  # (the whole axis is one)
        step = unit * axis.step // math.gcd(unit, axis.step)
        found = {f for f in found if f % step == 0 or f >= length} | {
            step * 2**k for k in range(4) if step * 2**k < length
        }
    if cap is not None:
        found = {f for f in found if f <= cap} or {min(found)}
    return sorted(found)


def choose(
    axes: Sequence[Axis],
    source: Source,
    out_itemsize: int,
    *,
    compute_itemsize: int,
    encode,
    budget: int,
    baseline: int,
    threads: int,
    max_block_bytes: int,
    block_target: int = 0,
    time_extra: float = 0.0,
    hosts: int = 1,
    host_budget: int | None = None,
    work: Callable[[tuple[int, ...]], int] | None = None,
    encodes_in_place: bool = False,
) -> Costs:
    """The block shape of the smallest estimated time whose projected peak fits ``budget``.
    ``encode(block) -> bytes`` is the writer's buffers for a block (``work``: see
    :func:`evaluate`). Raises NoFit."""
    options = [candidates(a) for a in axes]

    def cost(block) -> Costs:
        return evaluate(
            axes,
            block,
            source,
            out_itemsize,
            compute_itemsize=compute_itemsize,
            encode=encode(block),
            budget=budget,
            baseline=baseline,
            threads=threads,
            time_extra=time_extra,
            hosts=hosts,
            host_budget=host_budget,
            work=work,
            block_target=block_target,
            encodes_in_place=encodes_in_place,
        )

    least = tuple(o[0] for o in options)

    def ok(c: Costs) -> bool:  # (the cap on a block's bytes never refuses the smallest block)
        return c.in_flight >= 1 and (c.out <= max_block_bytes or c.block == least)

    best: Costs | None = None
    smallest: Costs | None = None
    if math.prod(len(o) for o in options) <= MAX_CANDIDATES:
        shapes = itertools.product(*options)
    else:
        shapes = _greedy(options, cost, ok)
    for shape in shapes:
        c = cost(shape)
        if smallest is None or c.task_peak < smallest.task_peak:
            smallest = c
        if ok(c) and (best is None or (c.seconds, -c.in_flight) < (best.seconds, -best.in_flight)):
            best = c
    if best is None:
        assert smallest is not None
        unit = math.prod(a.read_unit for a in axes) * source.itemsize
        raise NoFit(smallest.task_peak, unit)
    return best


def _greedy(options, cost, ok):
    """Block shapes along a greedy path: from the smallest, grow the axis whose next length
    lowers the estimated time most, while it fits."""
    at = [0] * len(options)
    yield tuple(o[0] for o in options)
    current = cost(tuple(o[0] for o in options))
    while True:
        moves = []
        for i, o in enumerate(options):
            if at[i] + 1 < len(o):
                trial = list(at)
                trial[i] += 1
                shape = tuple(opts[j] for opts, j in zip(options, trial))
                c = cost(shape)
                if ok(c):
                    moves.append((c.seconds, i, shape))
        if not moves:
            return
        seconds, i, shape = min(moves)
        if seconds >= current.seconds:
            return
        at[i] += 1
        current = cost(shape)
        yield shape


def process_rss() -> int:
    """This process's resident memory now (bytes; 0 where it cannot be read)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def reset_peak() -> None:
    """Start measuring :func:`peak_rss` from now (Linux; elsewhere nothing happens)."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss() -> int:
    """This process's peak resident memory so far (bytes; 0 where it cannot be read)."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
