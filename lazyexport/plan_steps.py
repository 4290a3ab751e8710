"""The planner's steps on values: the transformations after the cutout, the output chunk shape
that follows the source's chunking, and the renormalize input range read from the data.

The transformations are the steps of one :class:`~lazyexport.steps.Pipeline` (:func:`pipeline`):
the lazy result (:func:`transform`) and the block tasks (:mod:`lazyexport.blocks`, on numpy
blocks) run the same pipeline, so both paths give the same values. Reading the
data (:func:`data_range`, :func:`data_percentiles`) happens only when renormalizing without an
input range, once, and a note says so.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .axes import names
from .errors import SettingsError
from .percentiles import percentiles
from .settings import ExportSettings, percentile_of
from .sources.base import Window, dask_chunks, read_region, reader_array
from .sources.facts import source_facts
from .step_settings import settings_steps
from .steps import Convert, Cutout, Pipeline, Renormalize, Step, Transpose, ValueStep
from .transforms import converter, cutout

# renormalize's min/max pass reads a local file in groups of whole chunks of about this size
RANGE_READ_BYTES = 8 * 2**20


def pipeline(
    src: xr.DataArray,
    roi: Mapping[str, tuple[int, int]],
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
    order: str | None = None,
    extra: Sequence[Step] = (),
) -> Pipeline:
    """The export's steps from the source ``src``, in their order: the cutout of ``roi``, the
    steps the settings ask for (:mod:`lazyexport.step_settings`), the ``extra`` steps,
    renormalize (with resolved ranges, converting in the same pass) or convert, transpose to the
    settings' axis order, then to the format's own (``order``).
    Block tasks and the lazy result run this same pipeline."""
    dims = names(src)
    found = Pipeline(src.shape, src.dtype, dims, [Cutout(dims, roi)])
    settings_steps(settings, found, src)
    for step in extra:
        found.add(step)
    value = value_step(found.dtype, settings, renorm)
    if value is not None:
        found.add(value)
    for axes in (settings.axis_order, order):
        if axes is not None:
            found.add(Transpose(found.axes, axes))
    return found


def transform(
    src: xr.DataArray,
    roi: Mapping[str, tuple[int, int]],
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
    order: str | None = None,
    extra: Sequence[Step] = (),
) -> xr.DataArray:
    """The lazy export result for ``roi``: :func:`pipeline` on ``src``, without rechunking.
    :func:`build_plan` applies it to the whole ROI; a preview applies it to a one-plane ROI so
    that only the chunks of that plane are computed."""
    return pipeline(src, roi, settings, renorm, order, extra).lazy(src)


def steps(
    arr: xr.DataArray,
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
    order: str | None = None,
) -> xr.DataArray:
    """The transformations after the cutout, in their order, on ``arr`` (the cutout): the
    :func:`pipeline` of ``arr`` whole."""
    return transform(arr, {}, settings, renorm, order)


def value_step(
    dtype: np.dtype,
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
) -> ValueStep | None:
    """What the pipeline does to the values of a ``dtype`` array (None: nothing): renormalize
    (converting in the same pass), or convert.

    This is where the output dtype is decided, and it is always in native byte order, whatever
    the source's: a big-endian source's values are swapped here (in the block tasks and in the
    lazy result alike), so every writer is handed blocks in the dtype its metadata declares
    (Zarr v3's ``bytes`` codec and OME-Zarr 0.5 are little-endian; N5's codec swaps to the
    big-endian blocks its specification prescribes)."""
    if renorm is not None:
        return Renormalize(dtype, *renorm, settings.dtype)
    to = np.dtype(dtype if settings.dtype is None else settings.dtype).newbyteorder("=")
    return None if converter(dtype, to) is None else Convert(dtype, to)


def value_steps(
    dtype: np.dtype,
    settings: ExportSettings,
    renorm: tuple[tuple[float, float], tuple[float, float]] | None,
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, np.dtype]:
    """:func:`value_step` as a function of a numpy block that leaves the block unchanged (None:
    nothing), and the result's dtype."""
    step = value_step(dtype, settings, renorm)
    return (None, np.dtype(dtype)) if step is None else (step.values, step.out)


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


def data_percentiles(arr: da.Array, bounds: tuple, notes: list[str]) -> tuple[float, float]:
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


def data_range(arr: da.Array | tuple[Any, Any], notes: list[str]) -> tuple[float, float]:
    """The min/max of the data inside the ROI (any dtype; NaN ignored), read once from ``arr``
    (or found already: :func:`unit_extremes`); a note says so."""
    found = arr if isinstance(arr, tuple) else dask.compute(da.nanmin(arr), da.nanmax(arr))
    lo, hi = (float(v) for v in found)
    # integers as they are (a float's %g would round 65535000 to 6.5535e+07)
    exact = np.asarray(found[0]).dtype.kind in "biu"
    shown = [str(int(v)) if exact else f"{float(v):g}" for v in found]
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
    name = str(src.attrs.get("source", "the source"))
    window = Window(reader, tuple(slice(*b) for b in box), src.dtype, name, dims)
    arr = reader_array(window, dask_chunks(window.shape, src.dtype, [units[d] for d in dims]))
    return arr[tuple(slice(roi[d][0] - b[0], roi[d][1] - b[0]) for d, b in zip(dims, box))]


def read_range(
    src: xr.DataArray,
    roi: Mapping[str, tuple[int, int]],
    settings: ExportSettings,
    extra: Sequence[Step],
    asked: tuple | None,
    notes: list[str],
    threads: int | None = None,
    memory_limit: int | None = None,
) -> tuple[float, float]:
    """Renormalize's input range read from the data, where the settings do not give it: its
    min/max where ``asked`` is None, else the percentiles it names (``("p0.1", "p99.9")``).
    Read from the cutout (:func:`cutout_reads`; for the min/max of a local file,
    :func:`unit_extremes`, on ``threads`` within ``memory_limit``), or, where steps follow it
    (the settings' and ``extra``), from their result, which renormalize applies to (a binned
    mean or a smoothed volume has another range than its source)."""
    dims = names(src)
    found = Pipeline(src.shape, src.dtype, dims, [Cutout(dims, roi)])
    settings_steps(settings, found, src)
    for step in extra:
        found.add(step)
    plain = len(found.steps) == 1
    extremes = unit_extremes(src, roi, threads, memory_limit) if plain and asked is None else None
    if extremes is not None:
        return data_range(extremes, notes)
    data = cutout_reads(src, roi) if plain else found.lazy(src).data
    if asked is not None:
        return data_percentiles(data, asked, notes)
    return data_range(data, notes)


def unit_extremes(
    src: xr.DataArray,
    roi: Mapping[str, tuple[int, int]],
    threads: int | None = None,
    memory_limit: int | None = None,
) -> tuple[Any, Any] | None:
    """The min/max (NaN ignored) of the cutout of a local file source, read in groups of whole
    units (the file's chunks; about RANGE_READ_BYTES a group, clipped to ``roi``) on ``threads``
    threads (default: one per core; fewer where ``memory_limit`` does not hold that many
    groups): each group is reduced as it is read, and nothing bigger is gathered. None where the
    source is not read through its units (see :func:`cutout_reads`), or is at a URL (where the
    dask pass reads many units at once)."""
    from .execution.executors import Threads
    from .sources.autochunk import auto_chunks
    from .storage.reading import small_reads_cheap

    reader = read_through(src)
    units = source_facts(src).chunks if reader is not None else None
    dims = names(src)
    if (
        isinstance(reader, np.ndarray)
        or not units
        or any(d not in units for d in dims)
        or not small_reads_cheap(src.attrs.get("source"))
    ):
        return None
    # the groups: whole units, on the unit grid, covering the cutout
    first = [roi[d][0] // units[d] for d in dims]
    count = [-(-roi[d][1] // units[d]) - a for a, d in zip(first, dims)]
    unit_bytes = math.prod(units[d] for d in dims) * src.dtype.itemsize
    groups = auto_chunks(count, unit_bytes, [1] * len(dims), max(RANGE_READ_BYTES, unit_bytes))
    spans = [  # per axis: each group's (start, stop) in elements, clipped to the cutout
        [
            (max((a + b - c) * units[d], roi[d][0]), min((a + b) * units[d], roi[d][1]))
            for b, c in zip(itertools.accumulate(g), g)
        ]
        for a, g, d in zip(first, groups, dims)
    ]
    window = threads or os.cpu_count() or 1
    if memory_limit is not None:  # a group decoded, and what reading it holds besides
        group = math.prod(max(g) for g in groups) * unit_bytes
        window = max(min(window, memory_limit // (2 * group)), 1)
    name = str(src.attrs.get("source", "the source"))

    def extremes(corner: tuple[tuple[int, int], ...]) -> tuple[Any, Any]:
        box = tuple(slice(a, b) for a, b in corner)
        block = read_region(reader, box, name, dims)
        return np.fmin.reduce(block, axis=None), np.fmax.reduce(block, axis=None)

    found: list[Any] = []

    def fold(pair: tuple[Any, Any]) -> None:
        found[:] = (
            [pair]
            if not found
            else [(np.fmin(found[0][0], pair[0]), np.fmax(found[0][1], pair[1]))]
        )

    Threads(window).run(itertools.product(*spans), extremes, fold, lambda: None)
    return found[0]


def reads_into_block(
    reader: Any, pipeline: Pipeline, dims: Sequence[str], axes: Sequence[str], dtype, out_dtype
) -> bool:
    """Whether block tasks read the source through ``reader`` straight into their blocks (its
    ``read_into``: no piece array, no copy): a pipeline computed piece by piece that leaves the
    values, the axes (``dims`` the source's, ``axes`` the result's) and the data type as they
    are."""
    return (
        getattr(reader, "read_into", None) is not None
        and pipeline.piecewise()
        and pipeline.values() is None
        and tuple(dims) == tuple(axes)
        and np.dtype(out_dtype) == np.dtype(dtype) == reader.dtype
        and reader.dtype.type is np.dtype(dtype).type
    )


def read_through(src: xr.DataArray) -> Any:
    """What a block task reads ``src`` through: its file reader, the numpy array it wraps, or
    None where it must be computed by dask (the user's dask array, several files joined, or a
    source transformed after it was opened)."""
    facts = source_facts(src)
    reader = facts.reader
    if reader is None or src.data.name != facts.name:
        return None
    return reader
