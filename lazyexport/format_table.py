"""The output formats as ``lazyexport formats`` lists them, without importing a writer.

The writers (:mod:`lazyexport.formats`) are the one registry of formats; importing them imports
numpy, zarr, h5py, tifffile and dask, which listing the formats does not need. :data:`FORMATS`
holds what the list shows of each registered writer, by name; ``tests/test_format_table.py``
checks that it is :func:`row_of` every registered writer, so a writer changed without this table
fails the tests rather than listing stale facts. Once the writers are imported (by a plugin that
registers its own format, say), :func:`rows` lists the registry itself. The columns of
:func:`table` start at the same offset on every row.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FormatRow:
    """What the list of formats shows of one writer."""

    name: str
    sequence: bool  # one file per slice
    extensions: tuple[str, ...]
    compressions: tuple[str, ...]  # the first the default
    description: str
    options: tuple[str, ...]  # the settings only some formats use that it reads, sorted


def row_of(writer: Any) -> FormatRow:
    """The row of a registered :class:`~lazyexport.formats.base.Writer` instance."""
    caps = writer.capabilities
    return FormatRow(
        writer.name,
        caps.sequence,
        tuple(writer.extensions),
        tuple(caps.compressions),
        writer.description,
        tuple(sorted(caps.options)),
    )


FORMATS = (
    FormatRow(
        "hdf5",
        False,
        (".h5", ".hdf5", ".hdf"),
        ("gzip", "lzf", "zstd", "blosc", "none"),
        "one chunked HDF5 dataset with ilastik axistags",
        ("pixel_size", "unit"),
    ),
    FormatRow(
        "n5",
        False,
        (".n5",),
        ("gzip", "raw"),
        "an N5 dataset (Fiji N5 / BigDataViewer), gzip or raw blocks",
        ("pixel_size", "unit"),
    ),
    FormatRow(
        "npy",
        False,
        (".npy",),
        ("none",),
        "one .npy file, written block by block at its byte offsets",
        (),
    ),
    FormatRow(
        "ome-zarr",
        False,
        (".ome.zarr", ".zarr"),
        ("zstd", "blosc", "blosc-bitshuffle", "gzip", "none"),
        "an OME-NGFF image (0.5 on Zarr v3, 0.4 on v2) with a multiscale pyramid",
        (
            "downsample",
            "downsample_axes",
            "levels",
            "pixel_size",
            "shards",
            "unit",
            "zarr_format",
        ),
    ),
    FormatRow(
        "png-sequence",
        True,
        (".png",),
        ("deflate",),
        "one PNG per slice (8-bit gray/RGB(A), 16-bit gray)",
        (),
    ),
    FormatRow(
        "tiff",
        False,
        (".tif", ".tiff", ".ome.tif", ".ome.tiff"),
        ("none", "zlib", "lzma"),
        "one multipage (Big)TIFF, plain, ImageJ hyperstack or OME-TIFF, streamed page by page",
        ("pixel_size", "tiff_flavor", "unit"),
    ),
    FormatRow(
        "tiff-sequence",
        True,
        (".tif", ".tiff"),
        ("none", "zlib", "lzma"),
        "one TIFF per slice along the outermost non-channel axis",
        (),
    ),
    FormatRow(
        "zarr",
        False,
        (".zarr",),
        ("zstd", "blosc", "blosc-bitshuffle", "gzip", "none"),
        "a Zarr v3 (or v2) array with dimension names",
        ("shards", "zarr_format"),
    ),
)


def rows() -> tuple[FormatRow, ...]:
    """The registered formats: the registry's own rows once it is imported, else :data:`FORMATS`."""
    registry = sys.modules.get("lazyexport.formats")
    if registry is None:
        return FORMATS
    return tuple(row_of(registry.get_writer(name)) for name in registry.formats())


def table(listed: tuple[FormatRow, ...]) -> list[str]:
    """One line per format: name, kind, extensions, compressions (default), then the
    description and the options, each column as wide as its widest cell."""
    cells = [
        (
            r.name,
            "sequence" if r.sequence else "single",
            "/".join(r.extensions),
            f"compression: {', '.join(r.compressions)} (default {r.compressions[0]})",
            r.description + (f"; options: {', '.join(r.options)}" if r.options else ""),
        )
        for r in listed
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(c, widths)) + "  " + c[4] for c in cells]
