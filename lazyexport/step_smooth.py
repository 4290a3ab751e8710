"""The smoothing step: a Gaussian per axis, exact across block boundaries.

``smooth={"y": 2, "x": 2}`` (``--smooth y=2,x=2``) smooths with a Gaussian of standard deviation
``sigma`` per axis, in pixels, or in physical units (``"2um"``, ``"0.5 micrometer"``) where the
source has pixel sizes; the kernel is truncated at 4 sigma, so an output pixel depends on the
input pixels within ``radius = int(4 * sigma + 0.5)`` along each smoothed axis (as
``scipy.ndimage.gaussian_filter1d`` with ``truncate=4.0`` computes it).

Invariants:

- The values are those of ``scipy.ndimage.gaussian_filter(source, sigma, truncate=4.0,
  mode="reflect")`` of the whole in-memory source, then cut out, whatever the blocks: each block
  reads its halo (``radius`` pixels per smoothed axis) from the source, outside the cutout too
  where the source has data; at the source's own edge the block's data is reflected (scipy's
  default mode), which is what the whole source gives there. Inside, the real neighbours are
  read, so the mode only shapes halo pixels that are cut away.
- The axes are filtered one after the other in the input's axis order (as scipy does), each
  pass written in the output dtype: float32, float64 for a float64 input.
- Where smoothing follows another step (a binning), its input is that step's output: its edge
  is the input's edge (reflected), the cutout's surroundings are not read.
- The lazy path (:meth:`Smooth.lazy`) runs the same :meth:`Smooth.apply` on the same source
  regions (one task per chunk of the cutout), so ``compute=False``, previews and the block
  tasks agree exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .axes import parse_axes
from .errors import SettingsError
from .steps import Axes, Cutout, Pipeline, Region, Shape, Step
from .units import SPATIAL_AXES, axis_pairs, parse_unit, to_micrometers

TRUNCATE = 4.0
MIN_SIGMA = 0.01  # pixels: less does not smooth (a one-pixel kernel); far less, scipy divides by 0
MAX_RADIUS = 10**6  # pixels each side: a wider kernel is not smoothing a volume, but a mistake
ORDER = "tczyx"  # the order normalized settings keep their axes in
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\d\s].*)?$")


def radius(sigma: float) -> int:
    """How many pixels each side a Gaussian of ``sigma`` pixels reaches (scipy's rule)."""
    return int(TRUNCATE * float(sigma) + 0.5)


def smooth_dtype(in_dtype: np.dtype) -> np.dtype:
    """The output dtype of smoothing a ``in_dtype`` input: float64 for float64 (of either byte
    order: N5 and some HDF5 files store big-endian), else float32; native byte order."""
    dtype = np.dtype(in_dtype)
    wide = dtype.kind == "f" and dtype.itemsize == 8
    return np.dtype(np.float64 if wide else np.float32)


class Smooth(Step):
    """A Gaussian of ``sigma`` pixels per axis (by name) of an input with axes ``in_axes``.

    ``offset`` and ``extent`` say where the input lies in the source (the cutout's start, the
    source's shape, per input axis): the halo is read up to the source's edge. None: the input
    is all there is. ``source`` is the source's dask array, for :meth:`lazy` (not pickled: block
    tasks read through the pipeline)."""

    kind = "general"

    def __init__(
        self,
        in_axes: Sequence[str],
        sigma: Mapping[str, float],
        offset: Sequence[int] | None = None,
        extent: Sequence[int] | None = None,
        source: da.Array | None = None,
    ):
        self.in_axes: Axes = tuple(in_axes)
        self.sigma = {a: float(s) for a, s in sigma.items() if float(s) > 0}
        self.offset = None if offset is None else tuple(int(n) for n in offset)
        self.extent = None if extent is None else tuple(int(n) for n in extent)
        self.source = source

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["source"] = None
        return state

    def dtype(self, in_dtype: np.dtype) -> np.dtype:
        return smooth_dtype(in_dtype)

    def radii(self) -> tuple[int, ...]:
        return tuple(radius(self.sigma.get(a, 0.0)) for a in self.in_axes)

    def bounds(self, in_shape: Shape) -> list[tuple[int, int]]:
        """Per input axis, the readable range in the input's coordinates (the source's)."""
        if self.offset is None or self.extent is None:
            return [(0, n) for n in in_shape]
        return [(-o, e - o) for o, e in zip(self.offset, self.extent)]

    def describe(self) -> str:
        """The step in one line (``--plan``): sigma and halo per axis, in pixels."""
        halo = ",".join(f"{a}={radius(s)}" for a, s in self.sigma.items())
        sigma = ",".join(f"{a}={s:g}" for a, s in self.sigma.items())
        return f"smooth {sigma} (halo {halo} pixels each side)"

    def work(self, in_shape: Shape, in_dtype: np.dtype) -> int:
        """Bytes :meth:`apply` holds beyond its input and output for an input block of
        ``in_shape``: one array of the input's shape in the output dtype (the first pass writes
        it, the others work in it, in place), less the result, a view of it (the input without
        its halo, ``radius`` each side: at most what a block holds that has all of its halo)."""
        if not self.sigma:
            return 0
        kept = (max(n - 2 * r, 0) for n, r in zip(in_shape, self.radii()))
        return (math.prod(in_shape) - math.prod(kept)) * self.dtype(in_dtype).itemsize

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        """``out_region`` grown by the radius per smoothed axis, clipped to the source (this
        region may reach outside the cutout: the cutout maps it into the source)."""
        return tuple(
            slice(max(s.start - r, lo), min(s.stop + r, hi))
            for s, r, (lo, hi) in zip(out_region, self.radii(), self.bounds(in_shape))
        )

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        from scipy.ndimage import gaussian_filter1d  # (scipy: only where a block is smoothed)

        read = self.source_region(out_region, in_shape)
        out_dtype = self.dtype(block.dtype)
        data = block.view(np.uint8) if block.dtype == np.bool_ else block
        own = False  # whether ``data`` is this call's own array (else: ``block``, unchanged)
        for i, axis in enumerate(self.in_axes):
            if axis in self.sigma:  # the first pass makes the result, the others work in place
                output = data if own else out_dtype
                found = gaussian_filter1d(
                    data, self.sigma[axis], axis=i, output=output, truncate=TRUNCATE
                )
                data, own = (data if own else found), True
            keep = slice(out_region[i].start - read[i].start, out_region[i].stop - read[i].start)
            data = data[(slice(None),) * i + (keep,)]
        return np.asarray(data, dtype=out_dtype)

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        """One task per chunk of ``arr`` (the input), each :meth:`apply` on its source region,
        read from the source (the cutout's surroundings included) or from ``arr``."""
        source, offset = self.source, self.offset
        if source is None or offset is None:
            source, offset = arr.data, (0,) * arr.ndim
        in_shape = tuple(arr.shape)
        edges = [np.cumsum((0, *c)).tolist() for c in arr.data.chunks]
        out = self.dtype(arr.dtype)
        pieces = np.empty(tuple(len(e) - 1 for e in edges), dtype=object)
        for index in np.ndindex(*pieces.shape):
            region = tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, index))
            read = self.source_region(region, in_shape)
            piece = source[tuple(slice(s.start + o, s.stop + o) for s, o in zip(read, offset))]
            task = dask.delayed(self.apply, pure=True)(piece, region, in_shape)
            shape = tuple(s.stop - s.start for s in region)
            pieces[index] = da.from_delayed(task, shape, dtype=out)
        data = da.block(pieces.tolist()) if pieces.size else da.empty(in_shape, dtype=out)
        return arr.copy(data=data)


def parse_sigma(value: Any) -> dict[str, float | str]:
    """``"y=2,x=2um"`` or ``{"y": 2, "x": "0.5 micrometer"}`` -> per axis (in :data:`ORDER`) a
    positive number of pixels, or ``"<number> <unit>"`` (a UDUNITS name)."""
    pairs: Collection[tuple[Any, Any]] = ()
    if isinstance(value, str):
        pairs = axis_pairs(value, "smooth", "axis=sigma, e.g. y=2,x=2 or z=1um")
    elif isinstance(value, Mapping):
        pairs = value.items()
    if not pairs:
        raise SettingsError(
            f"smooth must map axes to sigmas, e.g. {{'y': 2, 'x': 2}}, got {value!r}"
        )
    found: dict[str, float | str] = {}
    for axis, sigma in pairs:
        letter = _axis(axis)
        if letter in found:
            raise SettingsError(f"smooth names axis {letter!r} twice; give each axis one sigma")
        found[letter] = _sigma(letter, sigma)
    return {a: found[a] for a in sorted(found, key=_axis_rank)}


def _axis(axis: Any) -> str:
    """The one axis letter ``axis`` names (lower case)."""
    letters = parse_axes(str(axis))
    if len(letters) != 1:
        raise SettingsError(
            f"smooth gives a sigma to {str(axis)!r}: name one axis per sigma, e.g. y=2,x=2"
        )
    return letters[0]


def _axis_rank(axis: str) -> tuple[int, str]:
    return (ORDER.index(axis) if axis in ORDER else len(ORDER), axis)


def _sigma(axis: str, sigma: Any) -> float | str:
    """One axis's sigma: a positive number of pixels, or ``"<number> <unit>"``."""
    unit = None
    if isinstance(sigma, str):
        match = _NUMBER.match(sigma)
        if match is None:
            raise SettingsError(
                f"smooth sigma for axis {axis!r} must be a number (pixels) or a length such as "
                f"2um, got {sigma!r}"
            )
        sigma, unit = match.group(1), match.group(2)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float | str):
        raise SettingsError(f"smooth sigma for axis {axis!r} must be a number, got {sigma!r}")
    number = float(sigma)
    if not (math.isfinite(number) and number > 0):
        raise SettingsError(f"smooth sigma for axis {axis!r} must be positive, got {sigma!r}")
    if unit is None or unit.strip().lower() in ("px", "pixel", "pixels"):
        return check_pixels(axis, number, f"{number:g} pixels")
    if axis not in SPATIAL_AXES:
        raise SettingsError(f"smooth sigma in {unit.strip()} is for the spatial axes z, y, x")
    short = f"{number:g}"  # the number as written where that is exact, else all its digits
    return f"{short if float(short) == number else repr(number)} {parse_unit(unit)}"


def check_pixels(axis: str, sigma: float, given: str) -> float:
    """``sigma`` (pixels; ``given``: how the settings gave it) where scipy can smooth with it:
    at least :data:`MIN_SIGMA`, its kernel's radius at most :data:`MAX_RADIUS`."""
    if sigma < MIN_SIGMA:
        raise SettingsError(
            f"smooth sigma for axis {axis!r} is {given}: it must be at least {MIN_SIGMA} pixel"
        )
    if not math.isfinite(sigma) or radius(sigma) > MAX_RADIUS:
        raise SettingsError(
            f"smooth sigma for axis {axis!r} is {given}: its kernel (4 sigma each side) must "
            f"reach at most {MAX_RADIUS} pixels"
        )
    return sigma


def check(settings: Any) -> None:
    """Normalize ``settings.smooth`` (:func:`parse_sigma`); None stays None."""
    if settings.smooth is not None:
        object.__setattr__(settings, "smooth", parse_sigma(settings.smooth))


def pixel_sizes(settings: Any, src: xr.DataArray) -> dict[str, float]:
    """Per spatial axis, the source's pixel size in micrometers (the settings' sizes first)."""
    attrs = src.attrs
    found: dict[str, float] = {}
    if attrs.get("pixel_size") and attrs.get("unit"):
        unit = parse_unit(attrs["unit"])
        found = {a: to_micrometers(float(v), unit) for a, v in attrs["pixel_size"].items()}
    if settings.pixel_size:
        unit = parse_unit(settings.unit or "micrometer")
        found.update({a: to_micrometers(float(v), unit) for a, v in settings.pixel_size.items()})
    return found


def in_pixels(settings: Any, found: Pipeline, src: xr.DataArray) -> dict[str, float]:
    """The settings' sigmas in pixels of the pipeline's output (binning's scale counted)."""
    sizes = pixel_sizes(settings, src)
    scale = dict(zip(found.axes, found.scale()))
    sigma: dict[str, float] = {}
    for axis, value in settings.smooth.items():
        if axis not in found.axes:
            raise SettingsError(
                f"smooth names axis {axis!r}, but the data has axes {''.join(found.axes)!r}"
            )
        if isinstance(value, str):
            number, unit = value.split()
            if axis not in sizes:
                raise SettingsError(
                    f"smooth gives axis {axis!r} a sigma in {unit}, but the source has no pixel "
                    f"size for it; give it in pixels or set pixel_size"
                )
            pixels = to_micrometers(float(number), unit) / (sizes[axis] * scale[axis])
            value = check_pixels(axis, pixels, f"{number} {unit} = {pixels:g} pixels")
        sigma[axis] = float(value)
    return sigma


class HalfSmooth(Smooth):
    """:class:`Smooth` of a float16 input, which scipy.ndimage does not filter: each block is
    cast to float32 first (one more float32 array of the block's shape, counted in
    :meth:`work`), then smoothed as a float32 block; the output is float32."""

    def work(self, in_shape: Shape, in_dtype: np.dtype) -> int:
        return math.prod(in_shape) * 4 + super().work(in_shape, np.dtype(np.float32))

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        return super().apply(block.astype(np.float32), out_region, in_shape)


def build(settings: Any, found: Pipeline, src: xr.DataArray) -> Smooth:
    """The smoothing step after ``found``: right after the cutout it reads its halo from the
    source ``src``; after another step, from that step's output only."""
    if found.dtype.kind not in "biuf":
        raise SettingsError(f"cannot smooth {found.dtype} data: only integers and floats")
    sigma = in_pixels(settings, found, src)
    half = found.dtype.kind == "f" and found.dtype.itemsize == 2
    step = HalfSmooth if half else Smooth
    cut = found.steps[0] if len(found.steps) == 1 else None
    if not isinstance(cut, Cutout):
        return step(found.axes, sigma)
    offset = [cut.start(a) for a in found.axes]
    return step(found.axes, sigma, offset, src.shape, src.data)


def parse(text: str) -> dict[str, Any]:
    return {"smooth": text}


# the fields of its :class:`~lazyexport.step_settings.StepSetting` (that module registers it)
SMOOTH: dict[str, Any] = {
    "fields": ("smooth",),
    "check": check,
    "build": build,
    "parse": parse,
    "metavar": "AXIS=SIGMA,...",
    "help": "Gaussian smoothing, sigma per axis in pixels or a length, e.g. y=2,x=2 or z=1um "
    "(truncated at 4 sigma; float32 output; docs/usage.md, 'Smooth')",
}
