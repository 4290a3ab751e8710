"""OME-Zarr: an OME-NGFF 0.5 image on Zarr v3 (default) or 0.4 on Zarr v2, with a pyramid.

Level ``0`` is the export itself, written block by block like any Zarr array. Level ``1`` is
made in the same pass where the method reads nothing beyond its windows (not ``gaussian``) and
the plan's blocks start at multiples of level 1's factor times its write unit
(:meth:`OmeZarrWriter.same_pass`; the planner tries such blocks first,
:meth:`OmeZarrWriter.block_steps`, and counts the piece's work, :meth:`OmeZarrWriter.block_work`):
the block task downsamples the block it wrote and writes its level-1 piece, whole level-1 shards
or chunks, so none is written by two tasks and level 0 is never read back. The other coarser
levels (all of them otherwise) are made in :meth:`OmeZarrTarget.finish`, after every block is on
disk and before the atomic rename: each level is read back from the level just written, in
blocks bounded by the memory budget, downsampled and written chunk-aligned by a few threads.
Progress counts the pixels these reads take as work after the blocks
(:meth:`OmeZarrTarget.finishing_work`, at least 1 with a pyramid), so it reaches 1 only after
the rename. Blocks marked done (a journal) have their level-1 piece written: both are written
by the block's task before it returns (the format is not resumable anyway).

On Zarr v3 every level is sharded (``spec.shards``: the setting's, or the planner's default of
about :data:`SHARD_BYTES`): level 1's shards cover a level-0 shard's region (halved along the
halved axes), the coarser levels' take level 0's shard shape; each is clipped to its level's
shape (:func:`level_shards`), in whole chunks of the level: its own where ``level_chunks`` names
it (:func:`~lazyexport.formats.pyramid.level_chunks`), else level 0's clipped; level 1's
write units, and so the same pass's block steps, are its own. A level made after the blocks is
written one whole shard per task, assembled from pieces within the pyramid's block budget, so no
shard is written by two threads.

Downsampling halves y and x, and z too while it is not much coarser than y/x ("isotropic
enough": z spacing at most 1.5 times the y/x spacing), or the axes ``downsample_axes`` names;
time and channel are never scaled (the geometry and methods: :mod:`lazyexport.formats.pyramid`).
Intensities are averaged (integers rounded half to even); label images take the most frequent
value of each window (ties to the smaller label), so no label appears that was not there;
``downsample="nearest"`` takes every other pixel, ``"gaussian"`` smooths the level below before
averaging (anti-aliased). The multiscale records the method (``type``, ``metadata``).
Without ``downsample``, data are labels when the result type says so (:func:`is_label_type`:
"Labels", "Simple Segmentation", ...) and bool masks take the mode too (their mean, stored as
bool, is "any": masks would grow); a note says how to ask for labels when integer data are
averaged by default. The axes must be stored in
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

import dataclasses
import math
from collections.abc import Callable
from itertools import product
from pathlib import Path

import dask
import numpy as np
import zarr

from ..chunkio import ChunkFiles, reader_for
from ..declarations import OME_ZARR
from ..errors import FormatError
from ..heap import release_memory
from . import container
from .base import Target
from .layout import AFTER_BLOCKS, SAME_PASS, ArrayLayout
from .pyramid import (
    AXIS_TYPES,
    Level,
    check_level_chunks,
    coordinate_transformations,
    downsample,
    halo,
    level_block,
    level_chunks,
    method_metadata,
    pass_bytes,
    pyramid,
    whole_units,
    work_bytes,
)
from .registry import register
from .spec import OutputSpec, Shape, ZarrFormat
from .zarr import ZarrTarget, ZarrWriter, compressors

NGFF_ORDER = "tczyx"
# On Zarr v3 without a shards setting: shards of whole chunks of up to this many bytes
# (uncompressed; lazyexport.plan_chunks.default_shards), applied to every level
SHARD_BYTES = 32 * 2**20
# A result type containing one of these (any case) names a label image.
LABEL_WORDS = ("label", "segmentation", "identities", "mask")
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


def ngff_metadata(
    name: str,
    axes: tuple[str, ...],
    levels: list[Level],
    units: dict[str, str],
    version: str,
    omero: dict | None = None,
    method: str | None = None,
) -> dict:
    """The group attributes: ``multiscales`` (under ``ome`` for 0.5). ``units`` names the unit
    of the space axes whose size is known; the others get none (their scale is 1). ``omero``
    (:func:`omero_metadata`), where given, goes beside ``multiscales``; ``method``, where
    given, is the pyramid's (the multiscale's ``type`` and ``metadata``)."""
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
        **(method_metadata(method) if method is not None else {}),
    }
    extra = {"omero": omero} if omero is not None else {}
    if version == "0.4":
        return {"multiscales": [{"version": "0.4", **image}], **extra}
    return {"ome": {"version": "0.5", "multiscales": [image], **extra}}


@register
class OmeZarrWriter(ZarrWriter):
    declaration = OME_ZARR  # not resumable: the pyramid is built from level 0 as one run wrote it
    shard_bytes = SHARD_BYTES
    volume_chunks = True  # viewers read volumes in near-cubic chunks

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
        levels, halved = spec.options.get("levels"), spec.options.get("downsample_axes")
        missing = [a for a in (halved or "").split(",") if a and a not in spec.axes]
        if missing:
            raise FormatError(
                f"downsample_axes {halved!r} names {', '.join(missing)}, which the output has "
                f"not (axes {''.join(spec.axes)!r}); name only its spatial axes"
            )
        found = pyramid(
            spec.axes, spec.shape, spec.pixel_size, levels, spec.origin, centred, spec.scale, halved
        )
        check_level_chunks(spec.axes, len(found), spec.options.get("level_chunks"))
        return found

    def arrays(self, spec: OutputSpec) -> tuple[ArrayLayout, ...]:
        """Every level: its path under the output, shape, chunks and shards (a level's chunks
        are cut to its shape, its shards to its whole chunks; level 1's cover a level-0 shard's
        region: :func:`level_shards`) and how it is made (level 1: in the same pass as level 0
        or after the blocks, :meth:`same_pass`); :meth:`open` creates the levels as these say."""
        layouts = list(self.layouts(spec, self.levels(spec)))
        if len(layouts) > 1 and spec.blocks:
            made = SAME_PASS if self.same_pass(spec) else AFTER_BLOCKS
            layouts[1] = dataclasses.replace(layouts[1], made=made)
        return tuple(layouts)

    def layouts(self, spec: OutputSpec, levels: list[Level]) -> tuple[ArrayLayout, ...]:
        """:meth:`arrays` of ``levels`` (without how they are made)."""
        layouts = []
        asked = spec.options.get("level_chunks")
        for level, chunks in zip(levels, level_chunks(spec.axes, spec.chunks, levels, asked)):
            path = f"{spec.internal.strip('/')}/{level.path}".strip("/")
            halved = level.factors if level.path == "1" else None
            shards = level_shards(spec.shards, chunks, level.shape, halved)
            layouts.append(ArrayLayout(path, level.shape, chunks, shards))
        return tuple(layouts)

    def block_steps(self, spec: OutputSpec) -> tuple[int, ...]:
        """Per axis, the block length whose multiples make whole write units (shards, else
        chunks) of level 1: its factor times that unit. Blocks starting at such multiples make
        level 1 in the same pass (:meth:`same_pass`); () where the method reads beyond its
        windows (gaussian) or there is no level 1."""
        levels = self.levels(spec)
        if len(levels) < 2 or any(halo(levels[1].factors, self.method(spec))):
            return ()
        one = self.layouts(spec, levels[:2])[1]
        return tuple(f * u for f, u in zip(levels[1].factors, one.shards or one.chunks))

    def same_pass(self, spec: OutputSpec) -> bool:
        """Whether each block task makes its block's level-1 piece too (so level 0 is not read
        back to make level 1): the planner chose the blocks at :meth:`block_steps` and priced
        that work (``spec.stepped``), and the plan's blocks (``spec.blocks``) start at multiples
        of those steps, so each is whole write units of level 1 (none written by two tasks)."""
        steps = self.block_steps(spec) if spec.blocks and spec.stepped else ()
        return bool(steps) and whole_units(spec.blocks, steps)

    def block_work(self, spec: OutputSpec, block: tuple[int, ...]) -> int:
        """A block chosen at :meth:`block_steps` (which may make its level-1 piece: the
        planner asks only for those) holds that piece, its downsampling's work space
        (:func:`pass_bytes`) and the piece's write buffers (a level-1 shard or chunk made
        contiguous and encoded)."""
        if not self.block_steps(spec):
            return 0
        levels, method, itemsize = self.levels(spec)[:2], self.method(spec), spec.dtype.itemsize
        level, one = levels[1], self.layouts(spec, levels)[1]
        piece = math.prod(-(-b // f) for b, f in zip(block, level.factors))
        made = piece * pass_bytes(itemsize, level.factors, method)
        return made + 2 * math.prod(one.shards or one.chunks) * itemsize

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
        attrs = ngff_metadata(
            spec.nickname, spec.axes, levels, units, version, omero, self.method(spec)
        )
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
            self.same_pass(spec),
        )
        try:
            root = zarr.open_group(store=target.zarr_store(), mode="w", zarr_format=fmt)
            group = root.require_group(group_path) if group_path else root
            group.attrs.update(attrs)
            for level, layout in zip(levels, self.arrays(spec)):
                group.create_array(
                    name=level.path,
                    shape=level.shape,
                    dtype=spec.dtype,
                    fill_value=0,
                    chunks=layout.chunks,
                    shards=layout.shards,
                    compressors=compressors(spec.compression, spec.compression_level, fmt),
                    dimension_names=list(spec.axes) if fmt == 3 else None,
                    chunk_key_encoding={"name": "v2", "separator": "/"} if fmt == 2 else None,
                )
        except BaseException:
            target.abort()
            raise
        return target


def fitting_piece(piece: Shape, fit: int) -> tuple[int, ...]:
    """``piece`` halved along its longest axis until it holds at most ``fit`` pixels: a level's
    blocks are whole chunks (or shards), but one chunk's work can exceed the budget (a gaussian
    level's float64 windows), so the block is then assembled from smaller pieces."""
    out = list(piece)
    while math.prod(out) > max(fit, 1) and max(out) > 1:
        i = out.index(max(out))
        out[i] = math.ceil(out[i] / 2)
    return tuple(out)


def level_shards(
    shards: Shape | None, chunks: Shape, shape: Shape, halved: Shape | None = None
) -> tuple[int, ...] | None:
    """A level's shard shape: the export's ``shards`` rounded up to whole ``chunks`` (the
    level's own: ``level_chunks`` may differ from level 0's) and clipped to the whole chunks
    that cover its ``shape`` (None: not sharded). ``halved`` (level 1's factors): the shards
    cover the region of one of level 0's, ``shards / factor`` rounded up to whole chunks, so a
    block of whole level-0 shards makes whole level-1 shards (the same pass)."""
    if shards is None:
        return None
    halved = halved or (1,) * len(shards)
    shards = tuple(math.ceil(s / f / c) * c for s, f, c in zip(shards, halved, chunks))
    return tuple(min(s, math.ceil(n / c) * c) for s, c, n in zip(shards, chunks, shape))


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
        same_pass: bool = False,
    ):
        super().__init__(temps, token, internal, store, zarr_format)
        self.group = internal.rpartition("/")[0]
        self.levels = levels
        self.method = method
        self.block_shape = block_shape
        self.workers = workers
        # level 1, written by the block tasks (OmeZarrWriter.same_pass; None: by finish)
        self.level_1 = None
        if same_pass:
            one = f"{self.group}/{levels[1].path}".strip("/")
            self.level_1 = ZarrTarget(temps, token, one, store, zarr_format)

    @property
    def node(self) -> str:
        return self.group

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        """Write a block of level 0 and, in the same pass, its piece of level 1 (whole write
        units of level 1: the plan's blocks are aligned to them, :meth:`OmeZarrWriter.same_pass`);
        return level 0's bytes."""
        written = super().write(block, location)
        if self.level_1 is not None:
            factors = self.levels[1].factors
            piece = tuple(slice(s.start // f, -(-s.stop // f)) for s, f in zip(location, factors))
            self.level_1.write(downsample(block, factors, self.method), piece)
        return written

    def built(self) -> list[tuple[Level, Level]]:
        """The (level below, level) pairs :meth:`finish` builds: every coarser level but level 1
        where the blocks made it."""
        pairs = list(zip(self.levels, self.levels[1:]))
        return pairs[1:] if self.level_1 is not None else pairs

    def finishing_work(self) -> int:
        """Every level :meth:`finish` builds reads the level below it once; at least 1 (the
        finish itself), so progress stays below 1 until the commit where the blocks made every
        level."""
        if len(self.levels) == 1:
            return 0
        return max(sum(math.prod(below.shape) for below, _ in self.built()), 1)

    def finish(self) -> None:
        release_memory()
        root = zarr.open_group(store=self.zarr_store(), mode="r+")
        group = root.require_group(self.group) if self.group else root
        for below, level in self.built():
            src, dst = group[below.path], group[level.path]
            assert isinstance(src, zarr.Array) and isinstance(dst, zarr.Array)  # written by open()
            self.build_level(src, dst, level.factors)

    def build_level(self, src: zarr.Array, dst: zarr.Array, factors: tuple[int, ...]) -> None:
        """Write ``dst`` from ``src`` block by block; a block is whole chunks of ``dst`` whose
        source region (and its float64 working copies) fits the memory budget per block. A
        sharded ``dst``'s block is one shard (so no shard is written by two threads), assembled
        from pieces of that size: it holds the shard's bytes besides one piece's work. Where one
        chunk's work exceeds the budget, the pieces are smaller than a chunk
        (:func:`fitting_piece`), still assembled into whole chunks before they are written."""
        itemsize = work_bytes(src.dtype.itemsize, factors, self.method)
        piece = self.block_shape(dst.chunks, dst.shape, itemsize)
        block = piece if dst.shards is None else dst.shards
        piece = fitting_piece(
            tuple(min(p, b) for p, b in zip(piece, block)),
            math.prod(self.block_shape((1,) * dst.ndim, dst.chunks, itemsize)),
        )
        grid = [range(0, n, b) for n, b in zip(dst.shape, block)]
        # local levels are read and written through their chunk files, as level 0 is: zarr's own
        # sharding codec would hold the encoded shard (twice) besides the assembled one
        source, files = reader_for(src), ChunkFiles.of(dst)

        def made(out: tuple[slice, ...]) -> np.ndarray:
            region = tuple(
                slice(s.start * f, min(s.stop * f, n)) for s, f, n in zip(out, factors, src.shape)
            )
            values = level_block(
                lambda r: np.asarray(source[r]), region, src.shape, factors, self.method
            )
            if self.report is not None:
                self.report(math.prod(s.stop - s.start for s in region))
            return values

        def store(values: np.ndarray, out: tuple[slice, ...]) -> None:
            if files is None:
                dst[out] = values
            else:
                files.write(values, out)

        def one(corner: tuple[int, ...]) -> None:
            out = tuple(slice(c, min(c + b, n)) for c, b, n in zip(corner, block, dst.shape))
            if block == piece:
                store(made(out), out)
                return
            whole = np.empty(tuple(s.stop - s.start for s in out), dst.dtype)
            for start in product(*(range(s.start, s.stop, p) for s, p in zip(out, piece))):
                part = tuple(slice(a, min(a + p, s.stop)) for a, p, s in zip(start, piece, out))
                at = tuple(slice(q.start - s.start, q.stop - s.start) for q, s in zip(part, out))
                whole[at] = made(part)
            store(whole, out)

        # dask's own thread pool, the one that wrote level 0: new threads would each get new
        # malloc arenas, and the process would keep the old ones' memory besides
        dask.compute(
            *(dask.delayed(one)(corner) for corner in product(*grid)),
            scheduler="threads",
            num_workers=self.workers,
        )
