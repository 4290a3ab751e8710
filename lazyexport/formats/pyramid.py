"""The pyramid of an OME-Zarr image: its levels' geometry and how a window of pixels becomes one.

:func:`pyramid` gives each level's shape, factors (from the level below), ``scale`` and
``translation``; :func:`level_chunks` its chunks (the ``level_chunks`` option's, else level 0's,
clipped); :func:`coordinate_transformations` writes them in NGFF's order; :func:`downsample`
reduces a block by whole windows (also binning's reducer, :mod:`lazyexport.step_bin`).
:data:`~lazyexport.declarations.LEVELS`, :data:`~lazyexport.declarations.DOWNSAMPLE` and
:data:`~lazyexport.declarations.DOWNSAMPLE_AXES` are the OME-Zarr format's options that choose
them.

Methods: ``mean``, ``mode`` (labels), ``nearest`` (a window's first pixel) and ``gaussian``: the
level below smoothed (sigma ``2 * f / 6`` pixels along a halved axis, scikit-image's
``pyramid_reduce`` rule; truncated at 4 sigma, edges reflected, as :mod:`lazyexport.step_smooth`),
then each window averaged. :func:`level_block` makes one block of a level; the multiscale's
``type`` and ``metadata`` name the method (:func:`method_metadata`). The ``downsample_axes`` option
names the axes every level halves (default: y, x, and z while isotropic enough). A level's work
space per pixel: :func:`work_bytes` (read back from the level below), :func:`pass_bytes` (made
from a block of it still held: level 1 in level 0's pass, where blocks start at whole write
units of level 1, :func:`whole_units`).

Invariants: level 0 is the export itself (factors 1); a level's shape is ``ceil(n / f)`` of the
level below's along each axis; channels are never scaled and never translated; a level's
translation is the physical position of its first pixel's centre (``mean``, ``mode``,
``gaussian``: the centre of its window; ``nearest``: the window's first pixel), so viewers place
every level over level 0 (and a cutout over its source). A ``gaussian`` block reads the kernel's
radius beyond its windows (clipped at the level's edges), so its values are those of the whole
level smoothed, whatever the blocks. Nothing here reads or writes a store (blocks are read
through the caller's function).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from ..errors import FormatError
from ..step_smooth import TRUNCATE, radius
from ..steps import Region
from ..transforms import convert_block

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
PLANE_FIT = 512  # the default pyramid ends with a level whose y/x fit in this
ANISOTROPY = 1.5  # z is downsampled while its spacing is at most this times y/x's


@dataclass(frozen=True)
class Level:
    path: str
    shape: tuple[int, ...]
    factors: tuple[int, ...]  # downsampling from the level before (1 for level 0)
    # physical size of a pixel per axis; where unknown, in source pixels (1, binned: the factor)
    scale: tuple[float, ...]
    # where the level's first pixel centre lies, in the scale's units (0 for channels)
    translation: tuple[float, ...] = ()


def pyramid(
    axes: tuple[str, ...],
    shape: tuple[int, ...],
    pixel_size: Mapping[str, float],
    levels: int | None,
    origin: Mapping[str, float] | None = None,
    centred: bool = False,
    steps: Mapping[str, float] | None = None,
    halved: str | None = None,
) -> list[Level]:
    """The levels of the pyramid: their shapes, factors, scales and translations (``levels=None``:
    until the halved y/x fit 512).

    Level 0's scale is ``pixel_size`` (already times the steps' factors) where known; elsewhere
    the unit is the source's pixel: the steps' factor (``steps``, source pixels per output
    pixel: binning), 1 without one; channels: 1. Its translation is the output's first pixel
    centre (``origin``, output pixels) times the scale. A coarser pixel made from a window of
    ``f`` pixels (``centred``: the mean, mode or smoothed mean of the window) lies at the
    window's centre, ``(f - 1) / 2`` pixels of the level below after the window's first;
    ``nearest`` takes the first pixel of the window, so no shift. ``halved`` (``"y,x"``: the
    ``downsample_axes`` option) names the axes halved at every level; None: y and x, and z
    while it is isotropic enough (:func:`factors`). The pyramid ends where no axis is left to
    halve.
    """
    origin, steps = origin or {}, steps or {}
    known = {a: s for a, s in pixel_size.items() if AXIS_TYPES.get(a) == "space"}
    scale = tuple(1.0 if a == "c" else known.get(a, steps.get(a, 1.0)) for a in axes)
    start = tuple(0.0 if a == "c" else origin.get(a, 0) * s for a, s in zip(axes, scale))
    out = [Level("0", tuple(shape), (1,) * len(axes), scale, start)]
    chosen = halved.split(",") if halved else None
    # the default pyramid ends when these fit PLANE_FIT: the halved plane axes, else all halved
    fit = [i for i, a in enumerate(axes) if a in "yx" and (chosen is None or a in chosen)]
    fit = fit or [i for i, a in enumerate(axes) if chosen is not None and a in chosen]
    while levels is None or len(out) < levels:
        last = out[-1]
        if levels is None and max((last.shape[i] for i in fit), default=0) <= PLANE_FIT:
            break
        found = factors(axes, last.shape, last.scale, chosen)
        if all(last.shape[i] == 1 for i in fit) or found == (1,) * len(axes):
            break  # nothing left to halve
        shift = [(f - 1) / 2 * s if centred else 0.0 for f, s in zip(found, last.scale)]
        out.append(
            Level(
                str(len(out)),
                tuple(math.ceil(n / f) for n, f in zip(last.shape, found)),
                found,
                tuple(s * f for s, f in zip(last.scale, found)),
                tuple(t + d for t, d in zip(last.translation, shift)),
            )
        )
    return out


def level_chunks(
    axes: tuple[str, ...],
    chunks: tuple[int, ...],
    levels: list[Level],
    asked: Mapping[int, Mapping[str, int]] | None = None,
) -> list[tuple[int, ...]]:
    """Each of ``levels``' chunk shape: the lengths ``asked`` for it (the ``level_chunks``
    option: level number -> axis -> length; checked by :func:`check_level_chunks`), else level
    0's ``chunks``, clipped to the level's shape."""
    asked = asked or {}
    return [
        tuple(
            min(asked.get(int(lv.path), {}).get(a, c), n) for a, c, n in zip(axes, chunks, lv.shape)
        )
        for lv in levels
    ]


def check_level_chunks(
    axes: tuple[str, ...], count: int, asked: Mapping[int, Mapping[str, int]] | None
) -> None:
    """Refuse, in one line, ``level_chunks`` (``asked``) naming a level beyond a pyramid of
    ``count`` levels or an axis the output (``axes``) has not."""
    asked = asked or {}
    beyond = sorted(k for k in asked if k >= count)
    if beyond:
        has = f"levels 0 to {count - 1}" if count > 1 else "level 0 only"
        raise FormatError(
            f"level_chunks names level {beyond[0]}, but the pyramid has {has} (level 0's chunks "
            "are --chunks); name only its levels from 1 or give more --levels"
        )
    for number, lengths in sorted(asked.items()):
        missing = [a for a in lengths if a not in axes]
        if missing:
            raise FormatError(
                f"level_chunks level {number} names axis {missing[0]!r}, which the output has "
                f"not (axes {''.join(axes)!r})"
            )


def factors(
    axes: tuple[str, ...],
    shape: tuple[int, ...],
    scale: tuple[float, ...],
    halved: list[str] | None = None,
) -> tuple[int, ...]:
    """The factors of the level after one of ``shape`` and ``scale``: 2 along the ``halved``
    axes (None: y and x, and z while its spacing is at most 1.5 times y/x's), 1 along the others
    and along an axis already 1 pixel long."""
    xy = max((s for a, s in zip(axes, scale) if a in "yx"), default=1.0)
    out = []
    for a, n, s in zip(axes, shape, scale):
        if halved is None:
            scaled = a in "yx" or (a == "z" and s <= ANISOTROPY * xy)
        else:
            scaled = a in halved
        out.append(2 if scaled and n > 1 else 1)
    return tuple(out)


def downsample(block: np.ndarray, factors: tuple[int, ...], method: str) -> np.ndarray:
    """Reduce each window of ``factors`` pixels to one: ``mean``, ``mode``, ``nearest``, ``max``
    or ``min`` (the last two for binning, :mod:`lazyexport.step_bin`).

    A window cut short by the end of the array counts only the pixels it has: the windows that
    fit and the short ones at the end are reduced apart, each with its own window.
    """
    if all(f == 1 for f in factors):
        return block
    if method == "nearest":
        return block[tuple(slice(None, None, f) for f in factors)]
    # per axis: the whole windows (source part, output part, window), then the short one
    parts = []
    for n, f in zip(block.shape, factors):
        whole = n - n % f
        found = [(slice(0, whole), slice(0, whole // f), f)] if whole else []
        if whole < n:
            found.append((slice(whole, n), slice(whole // f, whole // f + 1), n - whole))
        parts.append(found)
    out = np.empty(tuple(math.ceil(n / f) for n, f in zip(block.shape, factors)), block.dtype)
    for chosen in product(*parts):
        source, target, window = zip(*chosen)
        out[target] = _reduce(block[source], window, method)
    return out


def _reduce(block: np.ndarray, factors: tuple[int, ...], method: str) -> np.ndarray:
    """:func:`downsample` of a block whose lengths are whole multiples of ``factors``: a mean,
    maximum or minimum over the windows' pixels taken a window apart (one strided view per
    pixel of a window, no copy of the block), a mode over the windows reordered."""
    if method in ("mean", "max", "min"):
        views = [
            block[tuple(slice(o, None, f) for o, f in zip(offset, factors))]
            for offset in product(*(range(f) for f in factors))
        ]
        if method != "mean":
            out = views[0].copy()
            for view in views[1:]:
                (np.maximum if method == "max" else np.minimum)(out, view, out=out)
            return out
        total = views[0].astype(np.float64)
        for view in views[1:]:
            np.add(total, view, out=total)
        return as_type(np.divide(total, len(views), out=total), block.dtype)
    nd = block.ndim
    split = [x for n, f in zip(block.shape, factors) for x in (n // f, f)]
    windows = block.reshape(split).transpose(
        [2 * i for i in range(nd)] + [2 * i + 1 for i in range(nd)]
    )
    windows = windows.reshape(windows.shape[:nd] + (-1,))
    windows = np.sort(windows, axis=-1)
    counts = np.stack(
        [
            (windows == windows[..., j : j + 1]).sum(axis=-1, dtype=np.int16)
            for j in range(windows.shape[-1])
        ],
        axis=-1,
    )
    best = counts.argmax(axis=-1)[..., None]  # the first maximum: the smallest value
    return np.take_along_axis(windows, best, axis=-1)[..., 0]


def coordinate_transformations(level: Level) -> list[dict]:
    """A level's ``scale``, then its ``translation`` where it has one (NGFF's order)."""
    out: list[dict] = [{"type": "scale", "scale": list(level.scale)}]
    if any(level.translation):
        out.append({"type": "translation", "translation": [float(t) for t in level.translation]})
    return out


def as_type(mean: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A float64 working ``mean`` (the caller's temporary) in ``dtype``: floats cast, integers
    rounded half to even and clipped to the type (float64 rounds 2**63 - 1 up)."""
    if dtype.kind == "f":
        return mean.astype(dtype)
    return convert_block(mean, dtype, in_place=True)


def sigmas(factors: tuple[int, ...]) -> tuple[float, ...]:
    """``gaussian``'s standard deviation per axis, in pixels of the level below: scikit-image's
    ``pyramid_reduce`` rule ``2 * f / 6`` (2/3 for a halved axis), 0 where ``f`` is 1."""
    return tuple(2 * f / 6 if f > 1 else 0.0 for f in factors)


def halo(factors: tuple[int, ...], method: str) -> tuple[int, ...]:
    """The pixels of the level below a block of ``method`` reads beyond its windows, each side,
    per axis: the Gaussian's radius (truncated at 4 sigma, as the smooth step's), else 0."""
    if method != "gaussian":
        return (0,) * len(factors)
    return tuple(radius(s) for s in sigmas(factors))


def level_block(
    read: Callable[[Region], np.ndarray],
    windows: Region,
    shape: tuple[int, ...],
    factors: tuple[int, ...],
    method: str,
) -> np.ndarray:
    """The pixels of a coarser level made from ``windows``, a region of the level below (of
    ``shape``; it starts at a window's start), read by ``read``. ``gaussian`` reads the region
    grown by its :func:`halo`, clipped to the level, smooths it in float64 (scipy's
    ``gaussian_filter``, mode ``reflect`` at the level's edges, as the smooth step), cuts the
    halo away and averages each window: the values are those of the whole level smoothed, then
    averaged window by window, whatever the blocks."""
    if method != "gaussian":
        return downsample(read(windows), factors, method)
    from scipy.ndimage import gaussian_filter  # (scipy: only for gaussian levels)

    grown = tuple(
        slice(max(w.start - r, 0), min(w.stop + r, n))
        for w, r, n in zip(windows, halo(factors, method), shape)
    )
    data = read(grown)
    smooth = gaussian_filter(
        data.astype(np.float64), sigmas(factors), mode="reflect", truncate=TRUNCATE
    )
    keep = tuple(slice(w.start - g.start, w.stop - g.start) for w, g in zip(windows, grown))
    return as_type(downsample(smooth[keep], factors, "mean"), data.dtype)


def work_bytes(itemsize: int, factors: tuple[int, ...], method: str) -> int:
    """Bytes a level's block takes per output pixel: its window read, a reordered copy of it and
    float64 (or sort) work space; ``gaussian``: the window read and two float64 copies of it
    (the input, smoothed), then the windows' float64 sum and mean (the halo, a few pixels each
    side, is left to the budget's slack)."""
    if method == "gaussian":
        return (itemsize + 16) * math.prod(factors) + 16
    return (2 * itemsize + 8) * math.prod(factors)


def pass_bytes(itemsize: int, factors: tuple[int, ...], method: str) -> int:
    """Bytes a level's block takes per output pixel where it is made from a block of the level
    below already held (the same pass as that level: :func:`work_bytes` without the window
    read): ``mean`` its float64 sum and the result (and a converted copy), ``nearest`` the
    result, ``mode`` the windows reordered and sorted with their counts."""
    if method == "nearest":
        return itemsize
    if method == "mean":
        return 8 + 2 * itemsize
    return work_bytes(itemsize, factors, method) - itemsize * math.prod(factors) + itemsize


def whole_units(blocks: tuple[tuple[int, ...], ...], steps: tuple[int, ...]) -> bool:
    """Whether blocks of the lengths ``blocks`` (per axis, as dask's ``chunks``) start at
    multiples of ``steps`` (per axis; the last block ends at the axis's end, anywhere)."""
    for lengths, step in zip(blocks, steps):
        edge = 0
        for n in lengths[:-1]:
            edge += n
            if edge % step:
                return False
    return True


def method_metadata(method: str) -> dict[str, Any]:
    """The multiscale's ``type`` (the method) and ``metadata`` (NGFF: how the levels were made:
    ``description``, ``method``, ``version``, ``kwargs``)."""
    kwargs: dict[str, Any] = {"method": method, "factor": 2}
    if method == "gaussian":
        kwargs.update(sigma="2 * factor / 6", truncate=TRUNCATE, mode="reflect")
    return {
        "type": method,
        "metadata": {
            "description": DESCRIPTIONS[method],
            "method": "lazyexport.formats.pyramid.downsample",
            # the package's own (imported before any of its modules; not imported by name here:
            # the package imports what runs plans, which formats do not depend on)
            "version": sys.modules[__name__.partition(".")[0]].__version__,
            "kwargs": kwargs,
        },
    }


# each method in a line, for the multiscale's metadata
DESCRIPTIONS = {
    "mean": "each level's pixel is the mean of a window of the level below (integers rounded "
    "half to even), at the window's centre",
    "mode": "each level's pixel is the most frequent value of a window of the level below (ties "
    "to the smaller), at the window's centre: for label images",
    "nearest": "each level's pixel is the first pixel of a window of the level below",
    "gaussian": "the level below smoothed by a Gaussian of sigma 2 * factor / 6 pixels along the "
    "halved axes, then each window averaged, at the window's centre: anti-aliased",
}
