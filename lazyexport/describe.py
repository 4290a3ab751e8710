"""The Source Image Description: shape, dtype, axes, chunking and size, and the pixel sizes and
channel names where the file has them, without reading pixels."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from dask.utils import format_bytes

from .axes import names
from .errors import redact
from .sources import open_source
from .sources.facts import source_facts
from .units import unit_symbol


@dataclasses.dataclass(frozen=True)
class Description:
    source: str
    nickname: str
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]  # the file's chunk shape; the blocks read, for data without chunks
    nbytes: int
    shards: tuple[int, ...] | None = None  # sharded Zarr v3: the shard shape (whole chunks)
    blocks: tuple[int, ...] = ()  # the dask block shape lazyexport reads in
    chunked: bool = True  # False: an unchunked (contiguous) file
    scene: str | None = None  # a microscopy file's scene read, of ``scenes``
    scenes: tuple[str, ...] = ()
    channel_names: tuple[str, ...] = ()  # the names of the channels (axis c), where known
    # the file's physical pixel size per spatial axis, where known, in ``unit`` (None: no unit)
    pixel_size: tuple[tuple[str, float], ...] = ()
    unit: str | None = None

    def __str__(self) -> str:
        dims = ", ".join(f"{a}={s}" for a, s in zip(self.axes, self.shape))
        lines = [
            f"source    {self.source}",
            f"nickname  {self.nickname}",
            f"axes      {''.join(self.axes)}",
            f"shape     ({dims})",
            f"dtype     {self.dtype}",
            f"chunks    {self.chunks}" if self.chunked else "chunks    none (not chunked)",
        ]
        if self.shards:
            lines.append(f"shards    {self.shards}")
        if self.blocks and (not self.chunked or self.blocks != (self.shards or self.chunks)):
            lines.append(f"blocks    {self.blocks} (read by dask)")
        lines.append(f"size      {format_bytes(self.nbytes)} ({self.nbytes} bytes)")
        if self.scene is not None:
            lines.append(f"scene     {self.scene} (scenes: {', '.join(self.scenes)})")
        if self.pixel_size:
            sizes = " ".join(f"{a}={v:g}" for a, v in self.pixel_size)
            lines.append(f"pixels    {sizes}" + (f" {_symbol(self.unit)}" if self.unit else ""))
        if self.channel_names:
            lines.append(f"channels  {', '.join(self.channel_names)}")
        return redact("\n".join(lines))  # no URL's user-info


def _symbol(unit: str) -> str:
    try:
        return unit_symbol(unit)
    except KeyError:  # a unit an array of the user's names: as it is
        return unit


def _pixel_size(arr: xr.DataArray) -> tuple[tuple[str, float], ...]:
    """The source's pixel sizes (``attrs["pixel_size"]``) in the array's axis order."""
    sizes = arr.attrs.get("pixel_size")
    if not isinstance(sizes, Mapping):
        return ()
    return tuple((a, float(sizes[a])) for a in names(arr) if a in sizes)


def _by_axis(arr: xr.DataArray, lengths: Mapping[str, int] | None) -> tuple[int, ...] | None:
    if not isinstance(lengths, dict) or any(d not in lengths for d in arr.dims):
        return None
    return tuple(min(int(lengths[d]), int(n)) for d, n in arr.sizes.items())


def describe(source: Any, axes: str | None = None) -> Description:
    """What ``source`` holds and how it is stored; nothing but metadata is read.

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array or xarray.DataArray
        A path, an array, or a DataArray from :func:`lazyexport.open_source`.
    axes : str, optional
        Axis tags (e.g. ``"zyxc"``) that override the file's.

    Returns
    -------
    Description
        Axes, shape, dtype, bytes, the chunks and shards as stored in the file, the blocks
        lazyexport reads in where they differ, and the pixel sizes and channel names where the
        file has them; ``print()`` it.

    Raises
    ------
    SourceError
        For a source that cannot be opened.
    """
    arr = open_source(source, axes=axes)
    blocks = tuple(int(max(c)) for c in arr.data.chunks)
    facts = source_facts(arr)
    chunks = _by_axis(arr, facts.chunks)
    # an array, not a file: its own chunks
    if chunks is None and facts.reader is None:
        chunks = blocks
    return Description(
        source=str(arr.attrs.get("source")),
        nickname=str(arr.attrs.get("nickname")),
        axes=names(arr),
        shape=tuple(arr.shape),
        dtype=arr.dtype,
        chunks=chunks or blocks,
        nbytes=int(arr.nbytes),
        shards=_by_axis(arr, facts.shards),
        blocks=blocks,
        chunked=chunks is not None,
        scene=arr.attrs.get("scene"),
        scenes=tuple(arr.attrs.get("scenes", ())),
        channel_names=tuple(arr.attrs.get("channel_names", ())),
        pixel_size=_pixel_size(arr),
        unit=arr.attrs.get("unit"),
    )
