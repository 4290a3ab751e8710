"""N5 datasets (``store.n5`` or ``store.n5/path``); axes from the ``axes`` attribute (N5 order,
reversed to ours), pixel sizes from ``pixelResolution`` or ``resolution``.

Blocks are read and decoded with :mod:`lazyexport.n5codec` (the N5 writer's codec too); a
missing block reads as zeros, as N5 specifies. A compression that cannot be decoded is refused
when opening. :func:`n5_meta` reads what the metadata say (no dask or xarray); :func:`open_n5`
makes the dask array from it.
"""

from __future__ import annotations

import json
import math
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, SourceError
from ..n5codec import ATTRIBUTES, block_decoder, chunk_file, decode_block
from ..remote import as_path
from ..storage import reading
from ..units import parse_unit
from .base import FileArray, exportable_dtype, from_file_array, from_meta, resolve_axes
from .facts import SourceMeta
from .registry import SourceReader, register

if TYPE_CHECKING:
    import xarray as xr

SUFFIXES = (".n5",)


def _attributes(node: Path, values: Any = None) -> dict:
    """The attributes of the N5 node ``node`` ({} where it has none)."""
    found = reading.read_bytes(reading.below(node, ATTRIBUTES), values)
    return json.loads(found) if found is not None else {}


class N5Dataset:
    """Region reads of one N5 dataset: the blocks a region touches, decoded and assembled."""

    def __init__(self, path: Path, attrs: dict, values: Any = None):
        self.path, self.values = path, values
        self.shape = tuple(reversed(attrs["dimensions"]))
        self.chunks = tuple(reversed(attrs["blockSize"]))
        self.dtype = np.dtype(attrs["dataType"])
        self.decoder = block_decoder(attrs.get("compression", {}))

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        region = [range(*s.indices(n)) for s, n in zip(key, self.shape)]
        out = np.zeros([len(r) for r in region], dtype=self.dtype)
        grids = [
            range(r.start // c, math.ceil(r.stop / c)) if len(r) else range(0)
            for r, c in zip(region, self.chunks)
        ]
        for grid in product(*grids):
            data = reading.read_bytes(chunk_file(self.path, grid), self.values)
            if data is None:
                continue
            block = decode_block(data, self.dtype, self.decoder)
            src, dst = [], []
            for g, c, r, n in zip(grid, self.chunks, region, block.shape):
                lo, hi = max(r.start, g * c), min(r.stop, g * c + n)
                src.append(slice(lo - g * c, hi - g * c))
                dst.append(slice(lo - r.start, hi - r.start))
            out[tuple(dst)] = block[tuple(src)]
        return out


class N5Array(FileArray):
    def data_path(self) -> Any:
        return reading.below(self.path, self.key)

    def _open(self):
        node = as_path(self.data_path())
        return N5Dataset(node, _attributes(node, self.storage_options), self.storage_options)


def _datasets(root: Path) -> list[str]:
    """Dataset paths below ``root``; chunk directories (numbered) are not entered."""
    folders = reading.folders_with(root, ATTRIBUTES, skip=str.isdigit)
    return sorted(f for f in folders if "dimensions" in _attributes(root / f if f else root))


def n5_pixel_size(attrs: dict, axes: tuple[str, ...]) -> dict:
    """``pixel_size``/``unit`` source attributes from n5-viewer's ``pixelResolution`` or
    ``resolution`` (+ ``units``)."""
    res = attrs.get("pixelResolution")
    sizes, unit = (
        (res.get("dimensions"), res.get("unit"))
        if isinstance(res, dict)
        else (attrs.get("resolution"), None)
    )
    if unit is None and attrs.get("units"):
        unit = next((u for u in attrs["units"] if u), None)
    if not sizes or len(sizes) != len(axes):
        return {}
    try:
        unit = parse_unit(unit) if unit else None
    except Exception:
        return {}
    sizes = dict(zip(axes, reversed(sizes)))
    out: dict[str, Any] = {"pixel_size": {a: float(sizes[a]) for a in "zyx" if a in sizes}}
    if unit:
        out["unit"] = unit
    return out


def n5_meta(path: Path, internal: str, axes=None) -> tuple[SourceMeta, N5Array]:
    """What the N5 dataset ``internal`` of ``path`` holds, as its attributes say, and the file
    array reading it; no block is read."""
    container = reading.is_container(path)
    if not container or "n5" not in _attributes(path) and not _datasets(path):
        raise SourceError(f"{path} is not an N5 container (no attributes.json)")
    internal = internal.strip("/")
    attrs = _attributes(path / internal if internal else path)
    if "dimensions" not in attrs:
        names = _datasets(path / internal if internal else path)
        if len(names) != 1:
            listing = ", ".join(names[:10]) or "none"
            raise SourceError(
                f"{path}/{internal} holds {len(names)} N5 datasets ({listing}); name one as "
                f"{path}/<dataset>"
            )
        internal = f"{internal}/{names[0]}".strip("/")
        attrs = _attributes(path / internal)
    try:
        block_decoder(attrs.get("compression", {}))
    except FormatError as exc:
        raise SourceError(f"{path / internal if internal else path}: {exc}") from None
    shape, chunks = tuple(reversed(attrs["dimensions"])), tuple(reversed(attrs["blockSize"]))
    meta_axes = list(reversed(attrs["axes"])) if attrs.get("axes") else None
    arr = N5Array(path, shape, attrs["dataType"], key=internal)
    dims = resolve_axes(axes, meta_axes, shape)
    meta = SourceMeta(
        path=path,
        shape=shape,
        dtype=exportable_dtype(arr.dtype, path),
        axes=dims,
        file_chunks=chunks,
        identity_paths=(str(arr.data_path()),),
        attrs={"internal_path": internal, **n5_pixel_size(attrs, dims)},
    )
    return meta, arr


def open_n5(path: Path, internal: str, axes=None) -> xr.DataArray:
    meta, arr = n5_meta(path, internal, axes)
    return from_meta(meta, from_file_array(arr, meta.file_chunks), arr)


@register
class N5Reader(SourceReader):
    """N5 containers, at a URL object by object."""

    name = "n5"
    description = "N5"
    suffixes = SUFFIXES
    supports_urls = True

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        return open_n5(path, internal, axes=axes)

    def describe(self, path, internal, axes=None, scene=None) -> SourceMeta:
        return n5_meta(path, internal, axes=axes)[0]
