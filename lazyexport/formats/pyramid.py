"""The pyramid of an OME-Zarr image: its levels' geometry and how a window of pixels becomes one.

:func:`pyramid` gives each level's shape, factors (from the level below), ``scale`` and
``translation``; :func:`coordinate_transformations` writes them in NGFF's order; :func:`downsample`
reduces a block by whole windows (also binning's reducer, :mod:`lazyexport.step_bin`).
:data:`LEVELS` and :data:`DOWNSAMPLE` are the OME-Zarr writer's options that choose them.

Invariants: level 0 is the export itself (factors 1); a level's shape is ``ceil(n / f)`` of the
level below's along each axis; channels are never scaled and never translated; a level's
translation is the physical position of its first pixel's centre, so viewers place every level
over level 0 (and a cutout over its source). Nothing here reads or writes a store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..transforms import convert_block
from .options import Option, one_of

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
) -> list[Level]:
    """The levels of the pyramid: their shapes, factors, scales and translations (``levels=None``:
    until y/x fit 512).

    Level 0's scale is ``pixel_size`` (already times the steps' factors) where known; elsewhere
    the unit is the source's pixel: the steps' factor (``steps``, source pixels per output
    pixel: binning), 1 without one; channels: 1. Its translation is the output's first pixel
    centre (``origin``, output pixels) times the scale. A coarser pixel made from a window of
    ``f`` pixels (``centred``: the mean or mode of the window) lies at the window's centre,
    ``(f - 1) / 2`` pixels of the level below after the window's first; ``nearest`` takes the
    first pixel of the window, so no shift.
    """
    origin, steps = origin or {}, steps or {}
    known = {a: s for a, s in pixel_size.items() if AXIS_TYPES.get(a) == "space"}
    scale = tuple(1.0 if a == "c" else known.get(a, steps.get(a, 1.0)) for a in axes)
    start = tuple(0.0 if a == "c" else origin.get(a, 0) * s for a, s in zip(axes, scale))
    out = [Level("0", tuple(shape), (1,) * len(axes), scale, start)]
    plane = [i for i, a in enumerate(axes) if a in "yx"]
    while True:
        last = out[-1]
        if levels is not None and len(out) >= levels:
            break
        if levels is None and max(last.shape[i] for i in plane) <= PLANE_FIT:
            break
        if all(last.shape[i] == 1 for i in plane):  # nothing left to halve
            break
        xy = max(last.scale[i] for i in plane)
        factors = []
        for i, a in enumerate(axes):
            scaled = a in "yx" or (a == "z" and last.scale[i] <= ANISOTROPY * xy)
            factors.append(2 if scaled and last.shape[i] > 1 else 1)
        shift = [(f - 1) / 2 * s if centred else 0.0 for f, s in zip(factors, last.scale)]
        out.append(
            Level(
                str(len(out)),
                tuple(math.ceil(n / f) for n, f in zip(last.shape, factors)),
                tuple(factors),
                tuple(s * f for s, f in zip(last.scale, factors)),
                tuple(t + d for t, d in zip(last.translation, shift)),
            )
        )
    return out


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
        mean = np.divide(total, len(views), out=total)
        # integers: rounded half to even and clipped to the type (float64 rounds 2**63 - 1 up)
        if block.dtype.kind == "f":
            return mean.astype(block.dtype)
        return convert_block(mean, block.dtype, in_place=True)
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


DOWNSAMPLE_METHODS = ("mean", "mode", "nearest")


def _levels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise SettingsError(f"levels must be a whole number from 1 to 32, got {value!r}")
    return value


# declared here, read here (spec.options); ExportSettings(levels=..., downsample=...) still
# takes them
LEVELS = Option(
    "levels",
    "pyramid levels",
    "pyramid levels (default: until a level fits 512x512)",
    parse=int,
    check=_levels,
    metavar="LEVELS",
)
DOWNSAMPLE = Option(
    "downsample",
    "how pyramid levels are made",
    "pyramid: mean (default), mode (labels; the default with a --result-type naming labels, "
    "e.g. Labels, and with --segment or --threshold) or nearest",
    choices=DOWNSAMPLE_METHODS,
    check=one_of("downsample method", DOWNSAMPLE_METHODS),
)
