"""One multipage (Big)TIFF: plain (tifffile's JSON description), ImageJ hyperstack, or OME-TIFF.

A multipage TIFF is one sequential stream, written by one ``TiffWriter`` page after page,
while the runner hands blocks to :meth:`TiffTarget.write` in parallel and in any order. Two
ways to reconcile these were weighed:

- buffer finished blocks in memory and stream the pages as soon as the next ones are
  complete: one pass over the disk, but a block that finishes early must wait for every
  block before it, so the buffer is bounded only by how out of order the scheduler runs
  (in the worst case, the whole volume), and capping it needs back-pressure that can stall
  every worker behind one slow block; it also cannot work on distributed workers;
- **(chosen)** write each block at its place in a temporary raw file (positioned writes,
  in parallel, in any order, from any process that sees the file), then in ``finish()``
  stream that file page by page (or tile by tile for large planes) into the TIFF.

The chosen way costs one extra write and read of the uncompressed volume and as much free
disk space beside the output, and the TIFF encoding in ``finish()`` runs on one thread. In
exchange, memory is one page (or one band of tiles) whatever the order blocks finish in, it
needs no coordination between tasks, and a failed export leaves nothing behind (both temp
files are removed). The raw file is in the TIFF's own order (:meth:`TiffWriter.file_axes`:
ImageJ needs ``TZCYX``), which the planner gives the result already (``stored_axes``), so the
result's axes are the file's and blocks arrive in it (they would be transposed otherwise).
A plain TIFF keeps a last axis ``c`` as each pixel's samples (contiguous), so ``zyxc`` is
stored as asked.

BigTIFF, which ImageJ's own TIFF opener cannot read, is used only when the file could reach
4 GiB: tifffile cannot know the compressed size of pages from an iterator in advance, so the
size is bounded from above by the uncompressed size, the worst growth of incompressible data,
and the IFD and strip (or tile) entries of every page (:func:`size_bound`).

tifffile reads a last axis of length 1 as samples per pixel and leaves it out of the pages, so
a plane one pixel wide (an ROI ``x=5:6``) would be stored wrongly. The plain flavor therefore
writes its JSON description itself (tifffile then keeps the shape as given), and the ImageJ
flavor gives the samples axis ``S`` of length 1 explicitly.

Channel names, where the source has them, go into the OME-XML (``Channel Name``) of an OME-TIFF
and into the slice labels of an ImageJ hyperstack (each page labelled with its channel's name,
what Fiji shows above each plane).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import tifffile

from ..declarations import TIFF
from ..errors import FormatError
from ..heap import release_memory
from ..storage import remove, temp_path
from ..units import imagej_unit, to_micrometers, unit_symbol
from .base import Target, Writer, pread_exact, write_region
from .registry import register
from .spec import OutputSpec

TIFF_CODES = "TZCYX"
IMAGEJ_DTYPES = ("uint8", "uint16", "float32")
# the pixel types OME-XML names (tifffile refuses others when it writes the OME-XML, after the
# pixels are computed): no 64-bit integers, no float16
OME_DTYPES = ("bool", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float32", "float64")
OME_SUFFIXES = (".ome.tif", ".ome.tiff")
CLASSIC_LIMIT = 2**32  # bytes a classic TIFF can address (32-bit offsets)
TILE = 512  # tile edge for planes larger than TILED_PLANE_BYTES
TILED_PLANE_BYTES = 64 * 2**20
STRIP_BYTES = 2**18  # bytes per compressed strip (tifffile's default)
# For size_bound: incompressible data grows by less than this fraction (deflate < 0.1%,
# lzma < 1%), and every page and strip or tile adds at most these bytes to the file.
COMPRESSED_GROWTH = 1 / 64
PAGE_BYTES = 1024  # a page's IFD and tag values (tifffile writes about 250)
SEGMENT_BYTES = 128  # a strip's or tile's offset, byte count and stream framing
METADATA_BYTES = 2**20  # header, descriptions (ImageJ, OME-XML, JSON), resolution


def is_tiled(shape: tuple[int, ...], itemsize: int) -> bool:
    """Whether planes of ``shape[-2:]`` (pixels of ``itemsize`` bytes: all their samples) are
    written in tiles rather than strips."""
    return shape[-2] * shape[-1] * itemsize > TILED_PLANE_BYTES


def rows_per_strip(width: int, itemsize: int) -> int:
    return max(STRIP_BYTES // (width * itemsize), 1)


def size_bound(shape: tuple[int, ...], itemsize: int, compressed: bool) -> int:
    """More bytes than a TIFF of pages ``shape[-2:]`` (as :class:`TiffTarget` writes it) can
    take."""
    height, width = shape[-2:]
    if is_tiled(shape, itemsize):
        segments = math.ceil(height / TILE) * math.ceil(width / TILE)
    else:
        segments = math.ceil(height / rows_per_strip(width, itemsize)) if compressed else 1
    data = math.prod(shape) * itemsize
    if compressed:
        data += math.ceil(data * COMPRESSED_GROWTH)
    return data + math.prod(shape[:-2]) * (PAGE_BYTES + segments * SEGMENT_BYTES) + METADATA_BYTES


@register
class TiffWriter(Writer):
    declaration = TIFF
    # the usual chunks, which follow the source's: the raw file takes any block shape, and a
    # block shaped like the page (whole rows or planes) would read source chunks that
    # neighbouring blocks need too, which dask then holds in memory between them
    chunk_bytes = 4 * 2**20

    def write_buffers(
        self,
        block_bytes: int,
        unit_bytes: int,
        staged: bool = False,
        spec: OutputSpec | None = None,
    ) -> int:
        # the block reordered into the raw file's axis order (none where the orders agree)
        return (
            0
            if spec is not None and tuple(self.file_axes(spec)) == tuple(spec.axes)
            else block_bytes
        )

    @staticmethod
    def flavor(spec: OutputSpec) -> str:
        """The settings' flavor; without one, OME-TIFF for an output named ``.ome.tif`` or
        ``.ome.tiff``, else plain."""
        flavor: str | None = spec.options.get("tiff_flavor")
        if flavor is not None:
            return flavor
        return "ome" if spec.output.name.lower().endswith(OME_SUFFIXES) else "plain"

    def file_axes(self, spec: OutputSpec) -> tuple[str, ...]:
        """The TIFF's axis order: pages over the outer axes, planes over the last two spatial
        axes (ImageJ and OME: over y and x, which they require); plain TIFF keeps a last axis
        ``c`` as the planes' samples (pixels of several values), in the order asked."""
        flavor = self.flavor(spec)
        spatial = [a for a in spec.axes if a != "c"]
        if len(spatial) < 2:
            raise FormatError(
                "a TIFF needs two non-channel axes for its planes, the result has "
                f"{''.join(spec.axes)!r}"
            )
        plane = spatial[-2:]
        if flavor == "plain" and spec.axes[-1] == "c":
            plane.append("c")
        if flavor != "plain":
            other = [a for a in spec.axes if a not in "tzcyx"]
            if other:
                raise FormatError(
                    f"{flavor} TIFF has only the axes t, z, c, y, x; the result also has "
                    f"{''.join(other)!r} (use tiff_flavor='plain' or drop it with the axis order)"
                )
            if "y" not in spec.axes or "x" not in spec.axes:
                raise FormatError(
                    f"{flavor} TIFF planes are y by x, the result has axes "
                    f"{''.join(spec.axes)!r}; add the missing one with the axis order, "
                    f"or use tiff_flavor='plain'"
                )
            plane = ["y", "x"]
        if flavor == "imagej":
            if spec.dtype.name not in IMAGEJ_DTYPES:
                raise FormatError(
                    f"ImageJ TIFF holds {', '.join(IMAGEJ_DTYPES)}, not {spec.dtype}; convert the "
                    "data type"
                )
            outer = [a for a in "tzc" if a in spec.axes and a not in plane]
        elif flavor == "ome" and spec.dtype.name not in OME_DTYPES:
            raise FormatError(
                f"OME-TIFF holds {', '.join(OME_DTYPES)}, not {spec.dtype}; convert the data "
                "type, or use tiff_flavor='plain'"
            )
        else:
            outer = [a for a in spec.axes if a not in plane]
        return (*outer, *plane)

    def stored_axes(self, spec: OutputSpec) -> tuple[str, ...]:
        return self.file_axes(spec)

    def stored_reason(self, spec: OutputSpec) -> str:
        flavor = self.flavor(spec)
        if flavor == "imagej":
            return "an ImageJ hyperstack's order is TZCYX"
        if flavor == "ome":
            return "OME-TIFF planes are y by x"
        return "TIFF planes are two spatial axes, with channels as samples only when c is last"

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        notes = super().check(spec)
        self.file_axes(spec)  # refuse what the flavor cannot hold, at planning time
        if self.bigtiff(spec):
            notes += (
                "the TIFF could reach 4 GiB, so it is written as BigTIFF, which ImageJ's own "
                "TIFF opener cannot read (Fiji's Bio-Formats importer can)",
            )
        return notes

    def bigtiff(self, spec: OutputSpec) -> bool:
        """BigTIFF only where a classic TIFF might not hold the file (see :func:`size_bound`)."""
        axes = self.file_axes(spec)
        shape = tuple(spec.sizes[a] for a in axes)
        itemsize = spec.dtype.itemsize
        if self.flavor(spec) == "plain" and axes[-1] == "c":  # samples: pixels of c values
            shape, itemsize = shape[:-1], itemsize * shape[-1]
        return size_bound(shape, itemsize, spec.compression != "none") >= CLASSIC_LIMIT

    def open(self, spec: OutputSpec, token: str) -> Target:
        final = spec.output
        final.parent.mkdir(parents=True, exist_ok=True)
        temp, raw = temp_path(final, token), temp_path(final, token, "raw")
        file_axes = self.file_axes(spec)
        perm = tuple(spec.axes.index(a) for a in file_axes)
        shape = tuple(spec.shape[i] for i in perm)
        with open(raw, "wb") as f:
            f.truncate(spec.nbytes)  # sparse: blocks fill it in any order
        compression = spec.compression
        return TiffTarget(
            {final: temp},
            token,
            raw,
            perm,
            shape,
            spec.dtype.str,
            file_axes,
            self.flavor(spec),
            compression,
            spec.compression_level,
            spec.pixel_size,
            spec.unit,
            bigtiff=self.bigtiff(spec),
            channel_names=spec.channel_names,
        )


class TiffTarget(Target):
    def __init__(
        self,
        temps,
        token: str,
        raw: Path,
        perm,
        shape,
        dtype: str,
        file_axes,
        flavor: str,
        compression: str,
        level: int | None,
        pixel_size: Mapping[str, float],
        unit: str | None,
        bigtiff: bool,
        channel_names: tuple[str, ...] | None = None,
    ):
        super().__init__(temps, token)
        (self.temp,) = temps.values()
        self.raw = raw
        self.scratch.append(raw)
        self.perm, self.shape, self.dtype = tuple(perm), tuple(shape), np.dtype(dtype)
        self.file_axes, self.flavor = tuple(file_axes), flavor
        self.compression, self.level = compression, level
        self.pixel_size, self.unit = dict(pixel_size), unit
        self.bigtiff = bigtiff
        self.channel_names = channel_names
        # plain TIFF with c last: c values per pixel (contiguous samples); a length-1 c is left
        # out of the pages and kept in the description's shape
        self.samples = self.shape[-1] if flavor == "plain" and self.file_axes[-1] == "c" else 0
        self.page_shape = self.shape[-3:] if self.samples else self.shape[-2:]
        self.pixel_bytes = self.dtype.itemsize * max(self.samples, 1)

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        fd = os.open(self.raw, os.O_WRONLY)
        try:
            return write_region(
                fd, 0, self.shape, block.transpose(self.perm), tuple(location[i] for i in self.perm)
            )
        finally:
            os.close(fd)

    @property
    def tiled(self) -> bool:
        return is_tiled(self.page_shape[:2], self.pixel_bytes)

    def pages(self) -> Iterator[np.ndarray]:
        """Pages (or tiles, row by row within each page) from the raw file, one band in memory."""
        height, width = self.page_shape[:2]
        row = width * self.pixel_bytes
        npages = math.prod(self.shape[: -len(self.page_shape)])
        pixel = (self.samples,) if self.samples > 1 else ()
        band = TILE if self.tiled else height
        fd = os.open(self.raw, os.O_RDONLY)
        try:
            for page in range(npages):
                for y in range(0, height, band):
                    rows = min(band, height - y)
                    data = np.frombuffer(
                        pread_exact(fd, rows * row, (page * height + y) * row), self.dtype
                    )
                    data = data.reshape(rows, width, *pixel)
                    if not self.tiled:
                        yield data
                        continue
                    for x in range(0, width, TILE):
                        yield np.ascontiguousarray(data[:, x : x + TILE])
        finally:
            os.close(fd)

    def metadata(self) -> tuple[dict, dict]:
        """(``metadata=``, resolution keyword arguments) for tifffile, per flavor."""
        codes = "".join(a.upper() if a.upper() in TIFF_CODES else "Q" for a in self.file_axes)
        px = self.pixel_size
        res: dict = {}
        if "x" in px and "y" in px:
            res["resolution"] = (1.0 / px["x"], 1.0 / px["y"])
        if self.flavor == "imagej":
            return self._imagej_metadata(codes), res
        if self.flavor == "ome":
            return self._ome_metadata(codes), res
        meta: dict = {"axes": codes, "lazyexport_axes": "".join(self.file_axes)}
        if px:
            meta["pixel_size"] = px
        if px and self.unit:
            meta["unit"] = self.unit
        if "resolution" in res and not self.unit:
            res["resolutionunit"] = "NONE"
        # standard tags in pixels per centimeter, for any reader
        elif "resolution" in res and self.unit:
            res = {
                "resolution": tuple(1e4 / to_micrometers(px[a], self.unit) for a in "xy"),
                "resolutionunit": "CENTIMETER",
            }
        return meta, res

    def _imagej_metadata(self, codes: str) -> dict:
        """ImageJ's hyperstack metadata: axes, unit, z spacing, a channel label per page."""
        px = self.pixel_size
        meta: dict = {"axes": codes}
        if px and self.unit:
            meta["unit"] = imagej_unit(self.unit)
        if "z" in px:
            meta["spacing"] = px["z"]
        if self.channel_names and "c" in self.file_axes:  # a label per page: its channel's
            outer = [range(n) for n in self.shape[:-2]]
            c = self.file_axes.index("c")
            meta["Labels"] = [self.channel_names[i[c]] for i in itertools.product(*outer)]
        return meta

    def _ome_metadata(self, codes: str) -> dict:
        """OME-XML's metadata: axes, physical sizes with their unit, channel names."""
        meta: dict = {"axes": codes}
        for a, size in self.pixel_size.items():
            if self.unit:  # OME-XML's default unit is µm: sizes without a unit are left out
                meta[f"PhysicalSize{a.upper()}"] = size
                meta[f"PhysicalSize{a.upper()}Unit"] = unit_symbol(self.unit)
        if self.channel_names and "c" in self.file_axes:
            meta["Channel"] = {"Name": list(self.channel_names)}
        return meta

    def finish(self) -> None:
        release_memory()
        meta, res = self.metadata()
        compression = None if self.compression == "none" else self.compression
        args: dict = {}
        if compression and self.level is not None:
            args["compressionargs"] = {"level": self.level}
        if self.tiled:
            args["tile"] = (TILE, TILE)
        elif compression:
            args["rowsperstrip"] = rows_per_strip(self.page_shape[1], self.pixel_bytes)
        shape = self.shape
        if self.samples > 1:
            args["planarconfig"] = "contig"
        elif self.samples == 1:  # (the description keeps it)
            shape = shape[:-1]
        # keep a last axis of length 1 (see the module's note): the plain description written
        # here rather than by tifffile, ImageJ's samples axis given
        metadata: dict | None = meta
        if self.flavor == "plain":  # tifffile's own format
            args["description"] = json.dumps({"shape": list(self.shape), **meta})
            metadata = None
        elif self.flavor == "imagej":
            shape, metadata = (*shape, 1), {**meta, "axes": meta["axes"] + "S"}
        with warnings.catch_warnings():
            # the plan's note says so
            warnings.filterwarnings("ignore", ".*nonconformant BigTIFF ImageJ")
            with tifffile.TiffWriter(
                self.temp,
                bigtiff=self.bigtiff,
                imagej=self.flavor == "imagej",
                ome=self.flavor == "ome",
            ) as tif:
                tif.write(
                    self.pages(),
                    shape=shape,
                    dtype=self.dtype,
                    photometric="minisblack",
                    compression=compression,
                    metadata=metadata,
                    **res,
                    **args,
                )
        remove(self.raw)  # the TIFF is complete: give its disk space back before the rename
