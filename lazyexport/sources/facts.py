"""What a file reader tells the planner about the source it opened: one frozen
:class:`SourceFacts`, attached to the labeled DataArray once and read through
:func:`source_facts`.

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
from typing import Any

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


def source_facts(arr: xr.DataArray) -> SourceFacts:
    """The facts attached to ``arr`` (``SourceFacts()`` where none are)."""
    facts = arr.encoding.get(FACTS_KEY)
    return facts if isinstance(facts, SourceFacts) else SourceFacts()


def attach_facts(arr: xr.DataArray, facts: SourceFacts) -> xr.DataArray:
    """Attach ``facts`` to ``arr`` in place, replacing any it had; returns ``arr``."""
    arr.encoding[FACTS_KEY] = facts
    return arr
