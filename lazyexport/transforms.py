"""Transformations: cutout, renormalize, convert dtype, transpose, as functions; the planner
applies them in this order as steps of one pipeline (:mod:`lazyexport.steps`,
:func:`lazyexport.plan_steps.pipeline`).

Renormalize and convert are functions of a numpy block (:func:`renormalizer`,
:func:`converter`): the lazy result maps them over its blocks (``map_blocks``, so nothing is
computed until a writer asks for a block), and block tasks apply them to the pieces they read.
Cutout and transpose are ``DataArray -> DataArray`` functions over dask-backed arrays.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import dask.array as da
import numpy as np
import numpy.typing as npt
import xarray as xr

from .axes import names, parse_axes
from .errors import AxisError, SettingsError

# Integer types narrow enough that float32 holds every value exactly.
_FLOAT32_EXACT = {
    np.dtype(t) for t in ("bool", "int8", "uint8", "int16", "uint16", "float16", "float32")
}


def cutout(arr: xr.DataArray, roi: Mapping[str, tuple[int, int]]) -> xr.DataArray:
    """Slice the region ``roi`` (absolute ``[start, stop)`` per axis) out of ``arr``."""
    return arr.isel({axis: slice(*bounds) for axis, bounds in roi.items()})


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The float type renormalization computes in: float32 where exact enough, else float64."""
    exact = np.dtype(dtype).newbyteorder("=") in _FLOAT32_EXACT  # whatever its byte order
    return np.dtype("float32") if exact else np.dtype("float64")


def dtype_range(dtype: np.dtype) -> tuple[int, int] | None:
    """The exact range of an integer (or bool) type, as Python ints; None for floats."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return (0, 1)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return (int(info.min), int(info.max))
    return None


def renormalize(
    arr: xr.DataArray,
    in_range: tuple[float, float],
    out_range: tuple[float, float],
    dtype: np.dtype | str | None = None,
) -> xr.DataArray:
    """Linear map ``[in_min, in_max] -> [out_min, out_max]``, computed in :func:`compute_dtype`.

    ``out = (x - in_min) * (out_max - out_min) / (in_max - in_min) + out_min``; values outside the
    input range map outside the output range (a later integer conversion clips them). Values
    whose intermediate steps would overflow the compute type (near float32's maximum of 3.4e38)
    are computed again in float64 (float64: in long double), so a result that fits stays finite.
    With ``dtype``, the result is converted as :func:`convert_block` does, in the same pass (in
    place on the one temporary the renormalization needs).
    """
    block, out = renormalizer(arr.dtype, in_range, out_range, dtype)
    return arr.copy(data=da.map_blocks(block, arr.data, dtype=out))


def renormalizer(
    dtype: np.dtype,
    in_range: tuple[float, float],
    out_range: tuple[float, float],
    out_dtype: np.dtype | str | None = None,
) -> tuple[Callable[[np.ndarray], np.ndarray], np.dtype]:
    """What :func:`renormalize` does to each block of a ``dtype`` array (a function of a numpy
    array that leaves it unchanged), and the dtype of its result."""
    in_min, in_max = (float(v) for v in in_range)
    out_min, out_max = (float(v) for v in out_range)
    if in_min == in_max:
        raise SettingsError(
            f"renormalize input range [{in_min:g}, {in_max:g}] is empty (min == max)"
        )
    cdt = compute_dtype(dtype)
    out = cdt if out_dtype is None else np.dtype(out_dtype)
    return functools.partial(
        _renormalize_block,
        in_min=in_min,
        in_max=in_max,
        out_min=out_min,
        out_max=out_max,
        cdt=cdt,
        dtype=out,
    ), out


def _renormalize_block(x, in_min, in_max, out_min, out_max, cdt, dtype=None):
    x = np.asarray(x)
    wide = np.dtype(np.float64) if cdt.itemsize < 8 else np.dtype(np.longdouble)
    if wide.itemsize <= cdt.itemsize:  # no wider type here: overflow gives inf, as it must
        with np.errstate(over="ignore", invalid="ignore"):
            y = _linear_map(x, in_min, in_max, out_min, out_max, cdt)
    elif not _fits(cdt, in_min, in_max, out_min, out_max):
        # a span wider than float32's range: the whole block in the wider type
        with np.errstate(over="ignore", invalid="ignore"):
            y = _linear_map(x, in_min, in_max, out_min, out_max, wide).astype(cdt)
    else:
        # Huge values (|x| times the output span beyond float32's 3.4e38) overflow on the way
        # to a result that may fit: those few are computed again in the wider type. The
        # floating-point flags tell whether any step overflowed, without a pass over the block.
        overflowed: list[str] = []
        with np.errstate(
            over="call", invalid="call", call=lambda kind, flag: overflowed.append(kind)
        ):
            y = _linear_map(x, in_min, in_max, out_min, out_max, cdt)
        if overflowed:
            with np.errstate(over="ignore", invalid="ignore"):
                lost = ~np.isfinite(y)
                if x.dtype.kind == "f":
                    lost &= np.isfinite(x)
                y[lost] = _linear_map(x[lost], in_min, in_max, out_min, out_max, wide)
    return y if dtype is None or dtype == cdt else convert_block(y, dtype, in_place=True)


def _fits(cdt: np.dtype, in_min, in_max, out_min, out_max) -> bool:
    """Whether the constants of :func:`_linear_map` are finite in ``cdt``."""
    with np.errstate(over="ignore"):
        constants = np.array(
            [in_min, out_max - out_min, in_max - in_min, out_min], dtype=np.float64
        )
        return bool(np.isfinite(constants.astype(cdt)).all())


def _linear_map(x, in_min, in_max, out_min, out_max, cdt: np.dtype) -> np.ndarray:
    """``(x - in_min) * (out_max - out_min) / (in_max - in_min) + out_min`` in ``cdt``: one new
    array, then in place. Steps that cannot change a value (- 0, * 1, / 1) are left out, so the
    result is bit for bit that of the full formula. The spans are taken in ``cdt`` when it is
    wider than float64 (so that they do not overflow where their ends fit)."""
    t = cdt.type
    if cdt.itemsize > 8:
        out_span, in_span = t(out_max) - t(out_min), t(in_max) - t(in_min)
    else:
        out_span, in_span = t(out_max - out_min), t(in_max - in_min)
    y = np.array(x, dtype=cdt, copy=True)
    if in_min != 0:
        y -= t(in_min)
    if out_span != 1:
        y *= out_span
    if in_span != 1:
        y /= in_span
    if out_min != 0:
        y += t(out_min)
    return y


def converter(dtype: np.dtype, to: np.dtype | str) -> Callable[[np.ndarray], np.ndarray] | None:
    """Conversion of a ``dtype`` array's blocks to ``to`` (:func:`convert_block`, as a function of a
    numpy block that leaves it unchanged), or None where there is nothing to convert."""
    to = np.dtype(to)
    return None if to == np.dtype(dtype) else functools.partial(convert_block, dtype=to)


# What conversions to integer types did in the blocks this thread computes, while counted():
# values clipped below the type's range, above it, NaN written as 0, and infinities (among the
# clipped ones)
_COUNTS = threading.local()
COUNT_NAMES = ("clipped_below", "clipped_above", "nan", "inf")


@contextlib.contextmanager
def counted() -> Iterator[np.ndarray]:
    """Count what :func:`convert_block` clips and maps in this thread meanwhile, into the array
    yielded (one int64 per :data:`COUNT_NAMES`)."""
    counts = np.zeros(len(COUNT_NAMES), dtype=np.int64)
    before = getattr(_COUNTS, "counts", None)
    _COUNTS.counts = counts
    try:
        yield counts
    finally:
        _COUNTS.counts = before


def _count(*values: int) -> None:
    counts = getattr(_COUNTS, "counts", None)
    if counts is not None:
        counts += np.asarray(values, dtype=np.int64)


def convert_block(x: np.ndarray, dtype: npt.DTypeLike, in_place: bool = False) -> np.ndarray:
    """Convert one block to ``dtype``: integers round half to even, clip to the type's range,
    NaN -> 0 (what is clipped and mapped is counted: :func:`counted`). With ``in_place``, ``x``
    (a temporary of the caller's) may be overwritten."""
    dtype = np.dtype(dtype)
    x = np.asarray(x)
    if x.dtype.newbyteorder("=") == dtype.newbyteorder("="):  # the byte order only
        return x.astype(dtype)
    if dtype == np.bool_:
        return np.where(np.isnan(x), False, x != 0) if x.dtype.kind == "f" else x != 0
    if dtype.kind not in "ui" or x.dtype == np.bool_:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    if x.dtype.kind in "ui":
        src = np.iinfo(x.dtype)
        lo, hi = max(src.min, info.min), min(src.max, info.max)
        if lo > src.min or hi < src.max:
            counting = getattr(_COUNTS, "counts", None) is not None
            if counting:
                _count(
                    int(np.count_nonzero(x < x.dtype.type(lo))) if lo > src.min else 0,
                    int(np.count_nonzero(x > x.dtype.type(hi))) if hi < src.max else 0,
                    0,
                    0,
                )
        return np.clip(x, x.dtype.type(lo), x.dtype.type(hi)).astype(dtype)
    # float -> integer; float16 cannot even hold 65535, so widen it first (exactly)
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    rounded = np.rint(x, out=x) if in_place else np.rint(x)  # the steps below work in place
    return _float_to_int(rounded, dtype)


def _float_to_int(rounded: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rounded floats as the integer ``dtype``: clipped to its range, NaN -> 0, counted."""
    info = np.iinfo(dtype)
    ftype = rounded.dtype.type
    hi_f = ftype(info.max)
    exact = int(hi_f) <= info.max
    if not exact:  # info.max is not representable: use the float just below it
        hi_f = np.nextafter(hi_f, ftype(-np.inf))
    # the common case, a block inside the type's range (a renormalized one): two reductions tell
    # that nothing is clipped, NaN or infinite (a NaN fails both comparisons), so nothing is
    # counted and nothing clipped
    if rounded.size and rounded.min() >= ftype(info.min) and rounded.max() <= hi_f:
        return rounded.astype(dtype)
    above = None if exact else rounded > hi_f  # every float above hi_f is above info.max
    nan = np.isnan(rounded)
    if getattr(_COUNTS, "counts", None) is not None:
        _count(
            int(np.count_nonzero(rounded < ftype(info.min))),
            int(np.count_nonzero(rounded > hi_f)),
            int(np.count_nonzero(nan)),
            int(np.count_nonzero(np.isinf(rounded))),
        )
    if nan.any():
        rounded[nan] = 0
    np.clip(rounded, ftype(info.min), hi_f, out=rounded)
    out = rounded.astype(dtype)
    if above is not None:
        out[above] = info.max
    return out


def transpose(arr: xr.DataArray, order: str | Sequence[str]) -> xr.DataArray:
    """Reorder to ``order``: missing axes are added with length 1; axes left out must have length
    1."""
    axes = parse_axes(order)
    dropped = [a for a in arr.dims if a not in axes]
    too_long = [f"{a} (length {arr.sizes[a]})" for a in dropped if arr.sizes[a] != 1]
    unknown = [a for a in axes if a not in arr.dims]
    if too_long and unknown:  # most likely a typo: name the letter the data does not have first
        left_out = [f"{str(a)!r} (length {arr.sizes[a]})" for a in dropped if arr.sizes[a] != 1]
        raise AxisError(
            f"axis order {''.join(axes)!r}: unknown {'axes' if len(unknown) > 1 else 'axis'} "
            f"{', '.join(map(repr, unknown))} (the data has axes {''.join(names(arr))!r}), and it "
            f"leaves out {', '.join(left_out)}; only axes of length 1 can be dropped"
        )
    if too_long:
        raise AxisError(
            f"axis order {''.join(axes)!r} leaves out {', '.join(too_long)}; "
            f"only axes of length 1 can be dropped"
        )
    if dropped:
        arr = arr.isel({a: 0 for a in dropped}, drop=True)
    added = [a for a in axes if a not in arr.dims]
    if added:
        arr = arr.expand_dims(added)
    return arr.transpose(*axes)
