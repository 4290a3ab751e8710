"""TIFF / OME-TIFF / ImageJ hyperstacks (axes from tifffile's series), and slice sequences
given as a glob (``dir/slice_*.tif``), stacked along a new axis. Every slice file's header is
read when the sequence is opened: one of another shape or dtype than the first is refused.
:func:`tiff_meta` reads what a TIFF's metadata say (tifffile, no dask or xarray); :func:`open_tiff`
makes the dask array from it.
"""

from __future__ import annotations

import contextlib
import glob as globmod
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import numpy as np

from ..axes import parse_axes
from ..errors import AxisError, SourceError
from ..storage import capabilities, reading
from ..units import source_attrs
from .base import (
    FileArray,
    canonical_dtype,
    exportable_dtype,
    from_file_array,
    from_meta,
    labeled,
    resolve_axes,
)
from .facts import SourceMeta, attach_facts, source_facts
from .registry import SourceReader, register

if TYPE_CHECKING:
    import tifffile
    import xarray as xr

SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
IMAGE_SUFFIXES = SUFFIXES + (".png",)

# tifffile's axis codes -> ours. 'S' (samples, e.g. RGB) and 'I'/'Q' (plain page sequences)
# become channel and z when those are free.
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "Y": "y", "X": "x", "S": "c", "I": "z", "Q": "z"}


class TiffArray(FileArray):
    """Series 0 of a TIFF file, read region by region through tifffile's zarr store."""

    def _open(self):
        import tifffile
        import zarr

        store = zarr.open_array(
            tifffile.imread(self.file(), aszarr=True, series=0, level=0), mode="r"
        )
        if any(c > n for c, n in zip(store.chunks, store.shape)):
            # tifffile's store cannot read a series whose page axes are followed by length-1 axes
            # (e.g. (24, 2, 1, 1) of 24x2 pages: its chunks come out as (1, 1, 24, 2)); its
            # squeezed store can, and the length-1 axes are given back
            squeezed = zarr.open(
                tifffile.imread(self.file(), aszarr=True, series=0, level=0, squeeze=True),
                mode="r",
            )
            return _Unsqueezed(squeezed, self.shape)
        return store


class _Unsqueezed:
    """A squeezed array read as if it had the length-1 axes of ``shape`` too."""

    def __init__(self, squeezed, shape: tuple[int, ...]):
        self.squeezed, self.shape = squeezed, tuple(shape)
        self.kept = [i for i, n in enumerate(self.shape) if n != 1]
        if len(self.kept) != len(squeezed.shape):
            raise SourceError(
                f"cannot read this TIFF's layout: series {self.shape}, pages {squeezed.shape}"
            )

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        region = np.asarray(self.squeezed[tuple(key[i] for i in self.kept)])
        sizes = [len(range(n)[k]) for n, k in zip(self.shape, key) if isinstance(k, slice)]
        return region.reshape(sizes)


def tiff_axes(codes: str) -> tuple[str, ...]:
    """Translate tifffile's series axes (e.g. ``TZCYX``, ``IYXS``) to unique lower-case letters."""
    out: list[str] = []
    for code in codes:
        wanted = [_TIFF_AXES.get(code, code.lower()), code.lower()]
        choice = next((w for w in wanted if w not in out), None)
        if choice is None:
            choice = next(letter for letter in "abdefghijklmnopqrsuvw" if letter not in out)
        out.append(choice)
    return tuple(out)


@contextlib.contextmanager
def _parsed(path: str | Path):
    """``tifffile.TiffFile(path)``, refused as truncated or corrupt where tifffile skipped part
    of it (it logs a warning, e.g. a page offset past the end of the file, instead of raising)
    or where the first series' pixel data reach past the end of the file. (tifffile is imported
    by the functions that read a file: ``info`` of another source does not import it.)"""
    import tifffile

    skipped: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            skipped.append(record.getMessage())

    logger, keep = logging.getLogger("tifffile"), Keep(logging.WARNING)
    logger.addHandler(keep)
    propagate, logger.propagate = logger.propagate, False
    try:
        file: Any = reading.open_file(path)
        with tifffile.TiffFile(file) as tif:
            series = tif.series[0]
            end = _data_end(series)
            size = reading.size_of(file)
            if skipped or end > size:
                reason = (
                    skipped[0].split("> ", 1)[-1]
                    if skipped
                    else f"its pixel data end at byte {end}"
                )
                raise SourceError(
                    f"{path} is a truncated or corrupt TIFF ({reason}; the file has {size} bytes)"
                )
            yield tif
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate


def _data_end(series) -> int:
    """Where the pixel data of a tifffile series end in the file."""
    if series.dataoffset is not None:
        return int(series.dataoffset + series.nbytes)
    return max(
        (
            int(o) + int(c)
            for page in series.pages
            if page is not None
            for o, c in zip(page.dataoffsets, page.databytecounts)
        ),
        default=0,
    )


def tiff_meta(path: Path, internal: str, axes=None) -> tuple[SourceMeta, TiffArray]:
    """What series 0 of the TIFF file ``path`` holds, as its metadata say, and the file array
    reading it; no pixel is read."""
    import tifffile

    if internal:
        raise SourceError(f"{path} is a TIFF file; it has no internal path {internal!r}")
    try:
        with _parsed(path) as tif:
            series = tif.series[0]
            shape, dtype, codes = series.shape, series.dtype, series.axes
            page = series.keyframe
            native = [1] * (len(shape) - 2) + list(shape[-2:])
            if page.is_tiled and len(shape) >= 2 and codes[-1] != "S":
                native[-2:] = [page.tilelength, page.tilewidth]
            own = tif.shaped_metadata[0] if tif.shaped_metadata else {}
            meta_axes = (
                own.get("lazyexport_axes")
                if len(own.get("lazyexport_axes", "")) == len(shape)
                else None
            )
            extra = _pixel_size(tif, own)
            channel_names = _channel_names(tif)
    except (OSError, tifffile.TiffFileError, IndexError) as exc:
        raise SourceError(f"cannot open {path} as TIFF: {exc}") from None
    arr = TiffArray(path, shape, dtype)
    dims = resolve_axes(axes, meta_axes or tiff_axes(codes), shape)
    if "c" in dims and len(channel_names) == shape[dims.index("c")]:
        extra["channel_names"] = channel_names
    meta = SourceMeta(
        path=path,
        shape=tuple(shape),
        dtype=exportable_dtype(arr.dtype, path),
        axes=dims,
        native=tuple(native),
        identity_paths=(str(arr.data_path()),),
        attrs={"tiff_axes": codes, **extra},
    )
    return meta, arr


def open_tiff(path: Path, internal: str, axes=None) -> xr.DataArray:
    meta, arr = tiff_meta(path, internal, axes)
    return from_meta(meta, from_file_array(arr, meta.native), arr)


def _pixel_size(tif: tifffile.TiffFile, own: dict) -> dict:
    """``pixel_size``/``unit`` from OME-XML PhysicalSize*, ImageJ's resolution + spacing + unit, or
    the sizes lazyexport wrote into a plain TIFF's description. Other TIFFs' resolution tags
    (often a meaningless 72 dpi) are ignored, and so is an ImageJ resolution of 1 without a unit
    (an uncalibrated image); other ImageJ sizes without a unit have none."""
    try:
        if tif.is_ome and tif.ome_metadata:
            pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
            if pixels is None:
                return {}
            sizes: dict[str, Any] = {
                a: pixels.get(f"PhysicalSize{a.upper()}")
                for a in "zyx"
                if pixels.get(f"PhysicalSize{a.upper()}")
            }
            return source_attrs(sizes, pixels.get("PhysicalSizeXUnit", "µm"))
        if tif.is_imagej and tif.imagej_metadata:
            meta = tif.imagej_metadata
            xres, yres = tif.pages.first.resolution
            unit = meta.get("unit") if meta.get("unit") not in ("pixel", "pixels") else None
            sizes = {
                "x": 1 / xres if xres else None,
                "y": 1 / yres if yres else None,
                "z": meta.get("spacing"),
            }
            if not unit and (xres, yres) == (1, 1):
                sizes.update(x=None, y=None)
            return source_attrs(
                {a: v for a, v in sizes.items() if v is not None}, unit, default=None
            )
        if "pixel_size" in own:
            return source_attrs(own["pixel_size"], own.get("unit"), default=None)
    except (ValueError, TypeError, ZeroDivisionError, ElementTree.ParseError):
        pass
    return {}


def _channel_names(tif: tifffile.TiffFile) -> list[str]:
    """The channel names of an OME-TIFF's first image (series 0), from its OME-XML; none unless
    every channel has one."""
    try:
        if not (tif.is_ome and tif.ome_metadata):
            return []
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
    except ElementTree.ParseError:
        return []
    if pixels is None:
        return []
    names = [channel.get("Name") for channel in pixels.findall("{*}Channel")]
    return [str(n) for n in names] if names and all(names) else []


class ImageFileArray(FileArray):
    """One whole 2-D (or 2-D + channel) image file of a sequence."""

    def _open(self):
        if self.path.lower().endswith(".png"):
            from PIL import Image  # optional: PNG sequences need Pillow

            return np.asarray(Image.open(self.path))
        import tifffile

        return tifffile.imread(self.path)


# PIL image mode -> (dtype, samples) of ``np.asarray(image)``, to read a PNG's shape from its header
_PNG_MODES = {
    "1": ("bool", 0),
    "L": ("uint8", 0),
    "P": ("uint8", 0),
    "LA": ("uint8", 2),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
    "I;16": ("uint16", 0),
    "I": ("int32", 0),
    "F": ("float32", 0),
}


def _image_header(file: str) -> tuple[tuple[int, ...], np.dtype, str]:
    """A slice file's shape, dtype and tifffile axes, from its header (no pixel is read)."""
    if file.lower().endswith(".png"):
        try:
            from PIL import Image
        except ImportError:
            raise SourceError("reading PNG sequences needs Pillow: pip install pillow") from None
        with Image.open(file) as img:
            if img.mode in _PNG_MODES:
                kind, samples = _PNG_MODES[img.mode]
                shape = (img.height, img.width) + ((samples,) if samples else ())
                dtype = np.dtype(kind)
            else:  # a rare mode: decode it to see what numpy makes of it
                first = np.asarray(img)
                shape, dtype = first.shape, first.dtype
        return shape, canonical_dtype(dtype), "YXS"[: len(shape)]
    with _parsed(file) as tif:
        series = tif.series[0]
        return series.shape, canonical_dtype(series.dtype), series.axes


def _checked_header(file: str) -> tuple[tuple[int, ...], np.dtype, str]:
    import tifffile

    try:
        return _image_header(file)
    except (OSError, tifffile.TiffFileError, IndexError) as exc:
        raise SourceError(f"cannot read {file}: {exc}") from None


def _sequence_metadata(file: str) -> dict:
    """The axes lazyexport stored in a slice it wrote (empty for other files): in tifffile's
    JSON description of a TIFF, in the ``lazyexport`` text chunk of a PNG."""
    import tifffile

    if file.lower().endswith(".png"):
        from PIL import Image

        with Image.open(file) as img:
            text = getattr(img, "text", {}).get("lazyexport")
        meta = json.loads(text) if text else {}
    elif file.lower().endswith(SUFFIXES):
        with tifffile.TiffFile(file) as tif:
            meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    else:
        meta = {}
    return meta if "lazyexport_axes" in meta else {}


def open_sequence(files: str | list, axes=None, stack_axis: str = "z") -> xr.DataArray:
    """Stack image files along a new outer axis: a glob pattern (sorted by name) or a list.

    Slices written by lazyexport's sequence writers come back in the exported axis order.
    """
    import dask.array as da
    import tifffile

    from ..transforms import transpose

    pattern = files if isinstance(files, str) else None
    listed = [files] if isinstance(files, str) else files
    if not all(capabilities.opened_by_name(f) for f in listed):
        raise SourceError(
            "sequences of slice files are read from local files only; download them, or export "
            "to Zarr at a URL"
        )
    files = sorted(globmod.glob(files)) if isinstance(files, str) else [str(f) for f in files]
    if not files:
        raise SourceError(f"no files match {pattern!r}")
    shape, dtype, codes = _checked_header(files[0])
    try:
        meta = _sequence_metadata(files[0])
    except (OSError, tifffile.TiffFileError) as exc:
        raise SourceError(f"cannot read {files[0]}: {exc}") from None
    for file in files[1:]:
        other, other_dtype, _ = _checked_header(file)
        if (other, other_dtype) != (shape, dtype):
            raise SourceError(
                f"slice {file} is {other} {other_dtype}, but {files[0]} is {shape} {dtype}: "
                f"the slices of a sequence must have one shape and dtype"
            )
    arrays = [ImageFileArray(f, shape, dtype) for f in files]
    parts = [
        da.from_array(
            arr,
            chunks=shape,
            asarray=False,
            fancy=False,
            lock=False,
            meta=np.empty((0,) * len(shape), dtype),
        )
        for arr in arrays
    ]
    data = da.stack(parts, axis=0)
    if axes is not None:
        dims = parse_axes(axes, ndim=data.ndim)
    elif meta:
        dims = (meta["lazyexport_slice_axis"], *meta["lazyexport_plane"])
    else:
        plane = tiff_axes(codes)
        stack = parse_axes(stack_axis)[0]
        if stack in plane:
            raise AxisError(
                f"cannot stack along {stack!r}: the images already have that axis "
                f"({''.join(plane)})"
            )
        dims = (stack, *plane)
    first = Path(files[0])
    path = first.parent / (Path(pattern).name if pattern else first.name)
    out = labeled(
        data, dims, path, identity_paths=[arr.data_path() for arr in arrays], files=len(files)
    )
    out.attrs["nickname"] = first.parent.name
    if meta and axes is None:
        out = transpose(out, meta["lazyexport_axes"])
    # each file is one chunk: one slice deep
    chunks = {str(d): 1 if d == dims[0] else n for d, n in out.sizes.items()}
    attach_facts(out, source_facts(out).replace(chunks=chunks))
    return out


@register
class TiffReader(SourceReader):
    """TIFF, OME-TIFF and ImageJ hyperstacks, at a URL through range requests; a scene (an
    OME-TIFF's series) is read through bioio."""

    name = "tiff"
    description = "TIFF"
    suffixes = SUFFIXES
    supports_urls = True
    scenes_through = "bioio"

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        return open_tiff(path, internal, axes=axes)

    def describe(self, path, internal, axes=None, scene=None) -> SourceMeta:
        return tiff_meta(path, internal, axes=axes)[0]


@register
class SliceSequenceReader(SourceReader):
    """A glob of TIFF or PNG slice files (``dir/slice_*.tif``), stacked along a new axis; local
    files only. Chosen by the glob, not by a suffix."""

    name = "slice-sequence"
    description = "sequences of TIFF/PNG slices"
    guess_order = 5

    def can_open(self, path) -> bool:
        return any(ch in os.fspath(path) for ch in "*?[")

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        pattern = os.path.join(os.fspath(path), internal) if internal else os.fspath(path)
        if not pattern.lower().endswith(IMAGE_SUFFIXES):
            raise SourceError(f"a glob source must match .tif or .png files, got {pattern!r}")
        return open_sequence(pattern, axes=axes)
