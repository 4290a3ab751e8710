"""OME-Zarr: an OME-NGFF 0.5 image on Zarr v3 (default) or 0.4 on Zarr v2, with a pyramid.

Level ``0`` is the export itself, written block by block like any Zarr array. The coarser
levels ``1 .. N-1`` are made in :meth:`OmeZarrTarget.finish`, after every block of level 0 is
on disk and before the atomic rename: each level is read back from the level just written, in
blocks bounded by the memory budget, downsampled and written chunk-aligned by a few threads.
Progress counts the pixels these reads take as work after the blocks
(:meth:`OmeZarrTarget.finishing_work`), so it reaches 1 only after the rename.
This reads level 0 once more from disk instead of building one graph over all levels (which
would either hold level 0 blocks until their coarse chunks are complete, or recompute the
export per level).

Downsampling halves y and x, and z too while it is not much coarser than y/x ("isotropic
enough": z spacing at most 1.5 times the y/x spacing); time and channel are never scaled.
Intensities are averaged (integers rounded half to even); label images take the most frequent
value of each window (ties to the smaller label), so no label appears that was not there;
``downsample="nearest"`` takes every other pixel. Without ``downsample``, data are labels when
the result type says so (:func:`is_label_type`: "Labels", "Simple Segmentation", ...) and bool
masks take the mode too (their mean, stored as bool, is "any": masks would grow); a note says
how to ask for labels when integer data are averaged by default. The axes must be stored in
NGFF's order (time, channel, space), so the plan reorders the result when the user gave no axis
order.

Each level's ``scale`` (where the pixel size is unknown: in source pixels, so a binned level 0
gets the bin factors) is followed by a ``translation`` where it is not 0: a cutout's start in
the source times the scale, plus, for levels made of windows' means or modes, the shift to the
windows' centres (:func:`pyramid`), so viewers place a cutout over its source and every level
over level 0.

The result of a segment or threshold step (:attr:`OutputSpec.labels`) is a label image: its
pyramid takes the mode (unless ``downsample`` is given), and its integer image gets OME-NGFF
``image-label`` metadata (:func:`image_label`) beside ``multiscales``: the label image is the
store's own image (there is no intensity image in the store for it to sit under ``labels/`` of),
which ome-zarr-py reads as a label image and napari-ome-zarr opens as a labels layer.

Where the source names its channels (a microscopy file's), the names become the labels of the
``omero`` channels (top-level in 0.4, under ``ome`` in 0.5), with a color each and a display
window of the output's value range (0 to 1 for floats whose range is not known).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import dask
import numpy as np
import zarr

from ..errors import FormatError, SettingsError
from ..transforms import convert_block
from . import container
from .base import Capabilities, Target, release_memory
from .layout import ArrayLayout
from .options import Option, one_of
from .registry import register
from .spec import OutputSpec, Shape, ZarrFormat
from .zarr import ZarrTarget, ZarrWriter, compressors

NGFF_ORDER = "tczyx"
# A result type containing one of these (any case) names a label image.
LABEL_WORDS = ("label", "segmentation", "identities", "mask")
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
PLANE_FIT = 512  # the default pyramid ends with a level whose y/x fit in this
ANISOTROPY = 1.5  # z is downsampled while its spacing is at most this times y/x's
# omero channel colors: one channel white, several blue, green, red, magenta, cyan, yellow, ...
CHANNEL_COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")
# image-label colors of labels 1, 2, ... (repeated); label 0 (none) is transparent
LABEL_COLORS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


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


def is_label_type(result_type: str | None) -> bool:
    """Whether a result type names a label image ("Labels", "Simple Segmentation", ...)."""
    return result_type is not None and any(word in result_type.lower() for word in LABEL_WORDS)


def omero_metadata(
    names: tuple[str, ...], value_range: tuple[int, int] | tuple[float, float] | None
) -> dict:
    """``omero`` rendering metadata labelling the channels ``names``: a color each and the
    display window ``value_range`` (0 to 1 where it is not known)."""
    lo, hi = value_range if value_range is not None else (0.0, 1.0)
    window = {"min": lo, "max": hi, "start": lo, "end": hi}
    colors = CHANNEL_COLORS if len(names) > 1 else ("FFFFFF",)
    return {
        "channels": [
            {
                "label": name,
                "color": colors[i % len(colors)],
                "window": dict(window),
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
            }
            for i, name in enumerate(names)
        ]
    }


def image_label(names: tuple[str, ...], version: str) -> dict:
    """``image-label`` metadata of a label image made by the export (labels 1.. named
    ``names``, 0: none): a color (0 transparent) and a ``class`` per label value. It names no
    source image: the label image is the store's own image."""
    values = range(len(names) + 1)
    rgba = [[0, 0, 0, 0]] + [[*LABEL_COLORS[i % len(LABEL_COLORS)], 255] for i in values[:-1]]
    return {
        "version": version,
        "colors": [{"label-value": v, "rgba": c} for v, c in zip(values, rgba)],
        "properties": [{"label-value": v, "class": n} for v, n in zip(values, ("none", *names))],
    }


def coordinate_transformations(level: Level) -> list[dict]:
    """A level's ``scale``, then its ``translation`` where it has one (NGFF's order)."""
    out: list[dict] = [{"type": "scale", "scale": list(level.scale)}]
    if any(level.translation):
        out.append({"type": "translation", "translation": [float(t) for t in level.translation]})
    return out


def ngff_metadata(
    name: str,
    axes: tuple[str, ...],
    levels: list[Level],
    units: dict[str, str],
    version: str,
    omero: dict | None = None,
) -> dict:
    """The group attributes: ``multiscales`` (under ``ome`` for 0.5). ``units`` names the unit
    of the space axes whose size is known; the others get none (their scale is 1). ``omero``
    (:func:`omero_metadata`), where given, goes beside ``multiscales``."""
    axes_meta = []
    for a in axes:
        entry = {"name": a, "type": AXIS_TYPES[a]}
        if AXIS_TYPES[a] == "space" and units.get(a):
            entry["unit"] = units[a]
        axes_meta.append(entry)
    image = {
        "name": name,
        "axes": axes_meta,
        "datasets": [
            {"path": lv.path, "coordinateTransformations": coordinate_transformations(lv)}
            for lv in levels
        ],
    }
    extra = {"omero": omero} if omero is not None else {}
    if version == "0.4":
        return {"multiscales": [{"version": "0.4", **image}], **extra}
    return {"ome": {"version": "0.5", "multiscales": [image], **extra}}


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


@register
class OmeZarrWriter(ZarrWriter):
    name = "ome-zarr"
    extensions = (".ome.zarr", ".zarr")
    description = "an OME-NGFF image (0.5 on Zarr v3, 0.4 on v2) with a multiscale pyramid"
    # not resumable: the pyramid is built at the end, from level 0 as one run wrote it
    capabilities = Capabilities(
        object_store=True,
        compressions=ZarrWriter.capabilities.compressions,
        options=frozenset({"zarr_format", "pixel_size", "unit"}),
    )
    options = (LEVELS, DOWNSAMPLE)

    def axis_order(self, axes, sizes, explicit):
        other = [
            f"{a!r} (length {sizes[a]})" for a in axes if a not in NGFF_ORDER and sizes[a] != 1
        ]
        if other:
            raise FormatError(
                f"OME-Zarr has only the axes t, c, z, y, x; the result also has {', '.join(other)}"
            )
        wanted = "".join(a for a in NGFF_ORDER if a in axes or a in "yx")
        if explicit is not None and explicit != "".join(a for a in wanted if a in explicit):
            raise FormatError(
                f"OME-Zarr stores axes as time, channel, space ({wanted!r}); axis order "
                f"{explicit!r} cannot be stored: use {wanted!r} or give no axis order"
            )
        return wanted

    def levels(self, spec: OutputSpec) -> list[Level]:
        centred = self.method(spec) != "nearest"
        levels = spec.options.get("levels")
        return pyramid(
            spec.axes, spec.shape, spec.pixel_size, levels, spec.origin, centred, spec.scale
        )

    def arrays(self, spec: OutputSpec) -> tuple[ArrayLayout, ...]:
        """Every level: its path under the output, shape and chunks (a level's chunks are cut
        to its shape)."""
        return tuple(
            ArrayLayout(
                f"{spec.internal.strip('/')}/{level.path}".strip("/"),
                level.shape,
                tuple(min(c, n) for c, n in zip(spec.chunks, level.shape)),
            )
            for level in self.levels(spec)
        )

    def method(self, spec: OutputSpec) -> str:
        """The downsampling: the settings', else mode for label images (by result type, or made
        by a segment or threshold step) and bool masks (a mean of a mask would be "any", growing
        it level by level), else mean."""
        labels = (
            is_label_type(spec.result_type) or spec.dtype.kind == "b" or spec.labels is not None
        )
        return spec.options.get("downsample") or ("mode" if labels else "mean")

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        notes = super().check(spec)
        if (
            len(self.levels(spec)) > 1
            and spec.options.get("downsample") is None
            and spec.dtype.kind in "iu"
            and self.method(spec) == "mean"
        ):
            notes += (
                "pyramid levels average the integer data (intensities); for a label image pass "
                "downsample='mode' (--downsample mode) or a result type like 'Labels'",
            )
        return notes

    def open(self, spec: OutputSpec, token: str) -> Target:
        spot = container.place(spec.output, spec.internal, token)
        temp = spot.temp
        fmt = spec.zarr_format
        group_path = spot.internal
        levels = self.levels(spec)
        units = {a: spec.unit for a in spec.pixel_size} if spec.unit else {}
        omero = (
            omero_metadata(spec.channel_names, spec.value_range)
            if spec.channel_names is not None
            else None
        )
        version = "0.4" if fmt == 2 else "0.5"
        attrs = ngff_metadata(spec.nickname, spec.axes, levels, units, version, omero)
        if spec.value_range is not None:
            attrs["drange"] = list(spec.value_range)
        if spec.labels is not None and spec.dtype.kind in "iu":  # (NGFF labels are integers)
            (attrs["ome"] if fmt == 3 else attrs)["image-label"] = image_label(spec.labels, version)
        target = OmeZarrTarget(
            {spot.final: temp},
            token,
            f"{group_path}/0".strip("/"),
            levels,
            self.method(spec),
            spec.block_shape,
            spec.workers,
            spot.store,
            fmt,
        )
        try:
            root = zarr.open_group(store=target.zarr_store(), mode="w", zarr_format=fmt)
            group = root.require_group(group_path) if group_path else root
            group.attrs.update(attrs)
            for level in levels:
                group.create_array(
                    name=level.path,
                    shape=level.shape,
                    dtype=spec.dtype,
                    fill_value=0,
                    chunks=tuple(min(c, n) for c, n in zip(spec.chunks, level.shape)),
                    compressors=compressors(spec.compression, spec.compression_level, fmt),
                    dimension_names=list(spec.axes) if fmt == 3 else None,
                    chunk_key_encoding={"name": "v2", "separator": "/"} if fmt == 2 else None,
                )
        except BaseException:
            target.abort()
            raise
        return target


class OmeZarrTarget(ZarrTarget):
    """``block_shape``: the export's block sizing (:attr:`OutputSpec.block_shape`), for the levels'
    blocks."""

    def __init__(
        self,
        temps: dict[Path, Path],
        token: str,
        internal: str,
        levels: list[Level],
        method: str,
        block_shape: Callable[[Shape, Shape, int], Shape],
        workers: int,
        store: Path | None = None,
        zarr_format: ZarrFormat = 3,
    ):
        super().__init__(temps, token, internal, store, zarr_format)
        self.group = internal.rpartition("/")[0]
        self.levels = levels
        self.method = method
        self.block_shape = block_shape
        self.workers = workers

    @property
    def node(self) -> str:
        return self.group

    def finishing_work(self) -> int:
        """Every coarser level reads the level below it once."""
        return sum(math.prod(level.shape) for level in self.levels[:-1])

    def finish(self) -> None:
        release_memory()
        root = zarr.open_group(store=self.zarr_store(), mode="r+")
        group = root.require_group(self.group) if self.group else root
        for below, level in zip(self.levels, self.levels[1:]):
            src, dst = group[below.path], group[level.path]
            assert isinstance(src, zarr.Array) and isinstance(dst, zarr.Array)  # written by open()
            self.build_level(src, dst, level.factors)

    def build_level(self, src: zarr.Array, dst: zarr.Array, factors: tuple[int, ...]) -> None:
        """Write ``dst`` from ``src`` block by block; a block is whole chunks of ``dst`` whose
        source region (and its float64 working copies) fits the memory budget per block."""
        # per output pixel: its window read, a reordered copy of it, and float64 (or sort) work
        # space
        itemsize = (2 * src.dtype.itemsize + 8) * math.prod(factors)
        block = self.block_shape(dst.chunks, dst.shape, itemsize)
        grid = [range(0, n, b) for n, b in zip(dst.shape, block)]

        def one(corner: tuple[int, ...]) -> None:
            out = tuple(slice(c, min(c + b, n)) for c, b, n in zip(corner, block, dst.shape))
            region = tuple(
                slice(s.start * f, min(s.stop * f, n)) for s, f, n in zip(out, factors, src.shape)
            )
            dst[out] = downsample(np.asarray(src[region]), factors, self.method)
            if self.report is not None:
                self.report(math.prod(s.stop - s.start for s in region))

        # dask's own thread pool, the one that wrote level 0: new threads would each get new
        # malloc arenas, and the process would keep the old ones' memory besides
        dask.compute(
            *(dask.delayed(one)(corner) for corner in product(*grid)),
            scheduler="threads",
            num_workers=self.workers,
        )
