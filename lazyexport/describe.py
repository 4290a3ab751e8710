"""The Source Image Description: shape, dtype, axes, chunking and size, without reading pixels."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from dask.utils import format_bytes

from .sources import open_source


@dataclasses.dataclass(frozen=True)
class Description:
    source: str
    nickname: str
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]          # the dask block shape lazyexport reads in
    nbytes: int

    def __str__(self) -> str:
        dims = ", ".join(f"{a}={s}" for a, s in zip(self.axes, self.shape))
        return "\n".join([
            f"source    {self.source}",
            f"nickname  {self.nickname}",
            f"axes      {''.join(self.axes)}",
            f"shape     ({dims})",
            f"dtype     {self.dtype}",
            f"chunks    {self.chunks}",
            f"size      {format_bytes(self.nbytes)} ({self.nbytes} bytes)",
        ])


def describe(source: Any, axes: str | None = None) -> Description:
    """Describe ``source`` (a path, an array, or a DataArray from :func:`open_source`)."""
    arr = open_source(source, axes=axes)
    return Description(
        source=str(arr.attrs.get("source")),
        nickname=str(arr.attrs.get("nickname")),
        axes=tuple(str(d) for d in arr.dims),
        shape=tuple(arr.shape),
        dtype=arr.dtype,
        chunks=tuple(int(max(c)) for c in arr.data.chunks),
        nbytes=int(arr.nbytes),
    )
