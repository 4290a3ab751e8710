"""The Source Image Description: shape, dtype, axes, chunking and size, and the pixel sizes and
channel names where the file has them, without reading pixels.

Invariants: a path whose reader can describe it from its metadata
(:meth:`~lazyexport.sources.SourceReader.describe`) is described without importing dask or
xarray (``lazyexport info`` starts quickly), from the same
:class:`~lazyexport.sources.facts.SourceMeta` its opened DataArray is made from, and with the
blocks computed as the DataArray's (:func:`lazyexport.sources.base.dask_chunks`): the
description is the same either way. Arrays, and sources only their reader's ``open`` can tell
(a glob of slices, bioio), are opened.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .axes import names
from .errors import redact
from .sources import describe_path
from .sources.base import dask_chunks, path_attrs
from .sources.facts import SourceMeta, source_facts
from .storage import reading
from .units import unit_symbol

if TYPE_CHECKING:
    import xarray as xr


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
        lines.append(f"size      {format_size(self.nbytes)} ({self.nbytes} bytes)")
        if self.scene is not None:
            lines.append(f"scene     {self.scene} (scenes: {', '.join(self.scenes)})")
        if self.pixel_size:
            sizes = " ".join(f"{a}={v:g}" for a, v in self.pixel_size)
            lines.append(f"pixels    {sizes}" + (f" {_symbol(self.unit)}" if self.unit else ""))
        if self.channel_names:
            lines.append(f"channels  {', '.join(self.channel_names)}")
        return redact("\n".join(lines))  # no URL's user-info


def format_size(n: int) -> str:
    """``n`` bytes as the plans print them (dask's ``format_bytes``: ``64.00 kiB``), without
    importing dask."""
    for prefix, k in (("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("ki", 2**10)):
        if n >= k * 0.9:
            return f"{n / k:.2f} {prefix}B"
    return f"{n} B"


def _symbol(unit: str) -> str:
    try:
        return unit_symbol(unit)
    except KeyError:  # a unit an array of the user's names: as it is
        return unit


def _pixel_size(attrs: Mapping, axes: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """The source's pixel sizes (``attrs["pixel_size"]``) in the array's axis order."""
    sizes = attrs.get("pixel_size")
    if not isinstance(sizes, Mapping):
        return ()
    return tuple((a, float(sizes[a])) for a in axes if a in sizes)


def _clipped(lengths: Sequence[int] | None, shape: Sequence[int]) -> tuple[int, ...] | None:
    """A chunk (or shard) shape no longer than the array on any axis."""
    return None if lengths is None else tuple(min(int(c), int(n)) for c, n in zip(lengths, shape))


def _by_axis(arr: xr.DataArray, lengths: Mapping[str, int] | None) -> tuple[int, ...] | None:
    if not isinstance(lengths, dict) or any(d not in lengths for d in arr.dims):
        return None
    return _clipped([lengths[d] for d in arr.dims], arr.shape)


def _described(
    attrs: Mapping,
    axes: tuple[str, ...],
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...] | None,
    shards: tuple[int, ...] | None,
    blocks: tuple[int, ...],
) -> Description:
    return Description(
        source=str(attrs.get("source")),
        nickname=str(attrs.get("nickname")),
        axes=axes,
        shape=shape,
        dtype=dtype,
        chunks=chunks or blocks,
        nbytes=math.prod(shape) * dtype.itemsize,
        shards=shards,
        blocks=blocks,
        chunked=chunks is not None,
        scene=attrs.get("scene"),
        scenes=tuple(attrs.get("scenes", ())),
        channel_names=tuple(attrs.get("channel_names", ())),
        pixel_size=_pixel_size(attrs, axes),
        unit=attrs.get("unit"),
    )


def from_meta(meta: SourceMeta) -> Description:
    """The description of the source ``meta`` describes (see the module's invariants)."""
    blocks = tuple(max(c) for c in dask_chunks(meta.shape, meta.dtype, meta.native))
    return _described(
        {**path_attrs(meta.path), **meta.attrs},
        tuple(meta.axes),
        tuple(meta.shape),
        meta.dtype,
        _clipped(meta.chunks, meta.shape),
        _clipped(meta.shards, meta.shape),
        blocks,
    )


def from_array(arr: xr.DataArray) -> Description:
    """The description of the labeled DataArray ``arr`` (:func:`lazyexport.open_source`'s)."""
    blocks = tuple(int(max(c)) for c in arr.data.chunks)
    facts = source_facts(arr)
    chunks = _by_axis(arr, facts.chunks)
    # an array, not a file: its own chunks
    if chunks is None and facts.reader is None:
        chunks = blocks
    return _described(
        arr.attrs,
        names(arr),
        tuple(arr.shape),
        arr.dtype,
        chunks,
        _by_axis(arr, facts.shards),
        blocks,
    )


def describe(source: Any, axes: str | None = None, scene: int | str | None = None) -> Description:
    """What ``source`` holds and how it is stored; nothing but metadata is read.

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array or xarray.DataArray
        A path, an array, or a DataArray from :func:`lazyexport.open_source`.
    axes : str, optional
        Axis tags (e.g. ``"zyxc"``) that override the file's.
    scene : int or str, optional
        The scene of a microscopy file (see :func:`lazyexport.open_source`).

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
    from .sources import open_source

    text = reading.location_text(source)
    meta = describe_path(text, axes=axes, scene=scene) if text is not None else None
    if meta is not None:
        return from_meta(meta)
    return from_array(open_source(source, axes=axes, scene=scene))
