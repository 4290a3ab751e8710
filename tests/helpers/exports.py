"""A huge export cancelled at its first block: the machinery's own time, without the data."""

from __future__ import annotations

import threading
import time

import pytest
import zarr

import lazyexport as le
from lazyexport.errors import ExportCancelled


def cancel_a_huge_export(tmp_path, **options) -> tuple[float, float]:
    """Export an empty 1 TiB Zarr source (all fill value, so only the machinery is measured) to
    zarr with ``options`` and cancel it at its first progress event; return the seconds to that
    first block and from it until the export returned. Only the source is left afterwards."""
    source = tmp_path / "big.zarr"
    zarr.create_array(
        str(source),
        shape=(4096, 16384, 16384),
        chunks=(64, 256, 256),
        dtype="uint8",
        fill_value=0,
        dimension_names=["z", "y", "x"],
    )
    cancel, first = threading.Event(), []

    def progress(event):
        first.append(time.perf_counter())
        cancel.set()

    start = time.perf_counter()
    with pytest.raises(ExportCancelled):
        le.export(
            str(source),
            le.ExportSettings(format="zarr", output=str(tmp_path / "o")),
            progress=progress,
            cancel=cancel,
            **options,
        )
    stopped = time.perf_counter()
    assert first, "no block was written"
    assert [p.name for p in tmp_path.iterdir()] == ["big.zarr"]
    return first[0] - start, stopped - first[0]
