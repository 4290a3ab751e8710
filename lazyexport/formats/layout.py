"""The arrays an output holds where it holds more than the one the plan describes (an OME-Zarr
pyramid's levels): their paths, shapes, chunks and shards, as :meth:`Writer.arrays` returns them.

One description serves the plan (``--plan``, text and JSON) and the result (the result line and
:attr:`ExportResult.arrays`), so both list the same levels. Values only: nothing here writes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SAME_PASS = "in the same pass as level 0"  # ArrayLayout.made: from the blocks as they are written
AFTER_BLOCKS = "after the blocks"  # ArrayLayout.made: from the array before it, read back


@dataclasses.dataclass(frozen=True)
class ArrayLayout:
    """One array of an output: its path in the store, shape, chunk shape, shard shape (None:
    not sharded) and how it is made where that is a decision of the plan (an OME-Zarr's level 1:
    "in the same pass as level 0" or "after the blocks"; "": not one)."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None = None
    made: str = ""

    @property
    def reads_back(self) -> bool:
        """Whether the array is made from the one before it read back (a pyramid level after
        the first that is not made in the same pass)."""
        return self.made != SAME_PASS

    def summary(self) -> dict[str, Any]:
        """As plain data (JSON)."""
        return {
            "path": self.path,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "shards": list(self.shards) if self.shards else None,
            **({"made": self.made} if self.made else {}),
        }

    def __str__(self) -> str:
        shards = f" in shards of {self.shards}" if self.shards else ""
        made = f", made {self.made}" if self.made else ""
        return f"{self.path}: {self.shape}, chunks {self.chunks}{shards}{made}"
