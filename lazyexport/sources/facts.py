"""What a file reader tells the planner about the source it opened: one frozen
:class:`SourceFacts`, attached to the labeled DataArray once and read through
:func:`source_facts`; and what a reader reads from a source's metadata before any array is made,
one :class:`SourceMeta`, from which both the labeled DataArray (the export path) and
``lazyexport info`` (without dask or xarray) are made.

Invariants: the facts live under one ``encoding`` key (:data:`FACTS_KEY`), so they travel with the
DataArray exactly as far as its ``encoding`` does (a shallow copy keeps them; an operation that
drops ``encoding`` drops them all). An array without facts (data in memory, the user's dask array)
reads as ``SourceFacts()``: every field None, the planner's general path. Chunk and shard shapes are
held by axis name, so they stay right when the array is transposed. Nothing here reads a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

# the one encoding key holding a source's facts
FACTS_KEY = "lazyexport_source"


@dataclass(frozen=True)
class SourceFacts:
    """How a source is stored and read.

    ``reader`` is the sliceable object the data reads from (a file array, a zarr array, the numpy
    array wrapped), valid while the dask array's name is ``name`` (a source transformed after it
    was opened reads through dask). ``native`` is the file's own chunk shape in the array's axis
    order at opening, which the planner aligns output chunks with; ``chunks`` and ``shards`` are
    the file's read units and shards by axis; ``identity_paths`` are the files (or directories of
    chunk files) whose identity says whether a file source changed (see :mod:`lazyexport.resume`).
    """

    reader: Any = None
    name: str | None = None
    native: tuple[int, ...] | None = None
    chunks: Mapping[str, int] | None = None
    shards: Mapping[str, int] | None = None
    identity_paths: tuple[str, ...] | None = None

    def replace(self, **changes: Any) -> SourceFacts:
        """These facts with ``changes``."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SourceMeta:
    """A source as its metadata describe it, in the array's axis order: ``path`` is the file or
    store (a URL's too), ``axes`` the resolved axis tags, ``native`` the file's chunk shape that
    the dask blocks are whole multiples of (None: not chunked), ``file_chunks`` (default
    ``native``) and ``shards`` the chunk and shard shapes as ``describe`` shows them,
    ``identity_paths`` as in :class:`SourceFacts`, and ``attrs`` the source's own attributes
    (``internal_path``, ``pixel_size``, ``unit``, ``channel_names``, ...)."""

    path: Any
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: tuple[str, ...]
    native: tuple[int, ...] | None = None
    file_chunks: tuple[int, ...] | None = None
    shards: tuple[int, ...] | None = None
    identity_paths: tuple[str, ...] | None = None
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The file's chunk shape as stored (``file_chunks``, else ``native``)."""
        return self.file_chunks if self.file_chunks is not None else self.native


def source_facts(arr: xr.DataArray) -> SourceFacts:
    """The facts attached to ``arr`` (``SourceFacts()`` where none are)."""
    facts = arr.encoding.get(FACTS_KEY)
    return facts if isinstance(facts, SourceFacts) else SourceFacts()


def attach_facts(arr: xr.DataArray, facts: SourceFacts) -> xr.DataArray:
    """Attach ``facts`` to ``arr`` in place, replacing any it had; returns ``arr``."""
    arr.encoding[FACTS_KEY] = facts
    return arr
