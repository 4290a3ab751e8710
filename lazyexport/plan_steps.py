"""The planner's steps on values: the transformations after the cutout, the output chunk shape
that follows the source's chunking, and the renormalize input range read from the data.

The lazy result (:func:`steps`) and the block tasks (:func:`value_steps` on numpy blocks) apply
the same transformations in the same order, so both paths give the same values. Reading the
data (:func:`data_range`, :func:`data_percentiles`) happens only when renormalizing without an
input range, once, and a note says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .errors import SettingsError
from .percentiles import percentiles
from .settings import ExportSettings, percentile_of
from .transforms import converter, cutout, renormalizer, transpose


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


def data_range(arr: da.Array, notes: list[str]) -> tuple[float, float]:
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
