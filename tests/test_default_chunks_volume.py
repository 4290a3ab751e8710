"""The planner's default chunks for an OME-Zarr volume from a page-chunked source: near-cubic
(viewers read volumes in all directions), not the source's thin planes; a 2-D image and the
zarr format keep following the source's chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import lazyexport as le
from lazyexport.plan import build_plan
from lazyexport.plan_chunks import cubic_chunks


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    """A (64, 512, 512) uint16 stack, one TIFF page (one read unit) per plane: 32 MiB."""
    path = tmp_path_factory.mktemp("tif") / "stack.tif"
    data = np.arange(64 * 512 * 512, dtype=np.uint32).reshape(64, 512, 512).astype(np.uint16)
    tifffile.imwrite(path, data)
    return path


def plan_for(source: Path, fmt: str, out: Path, **kw):
    settings = le.ExportSettings(format=fmt, output=str(out), **kw)
    return build_plan(le.open_source(str(source)), settings, memory_limit="1GiB")


def test_page_chunked_volume_gets_near_cubic_ome_zarr_chunks(pages, tmp_path):
    plan = plan_for(pages, "ome-zarr", tmp_path / "v.ome.zarr", shards="none")
    assert plan.chunks == (64, 128, 256)  # 4 MiB: z stops at the stack's 64, y and x go on
    cube = plan_for(pages, "ome-zarr", tmp_path / "v.ome.zarr", shards="none", dtype="uint8")
    assert cube.chunks == (64, 256, 256)
    # the planner's old rule for the same source: thin planes, still zarr's
    plain = plan_for(pages, "zarr", tmp_path / "v.zarr")
    assert plain.chunks[0] <= 8 and plain.chunks[1:] == (512, 512)
    # the user's chunks are kept
    given = plan_for(pages, "ome-zarr", tmp_path / "v.ome.zarr", chunks={"z": 2})
    assert given.chunks[0] == 2


def test_a_two_dimensional_image_stays_one_plane(pages, tmp_path):
    plan = plan_for(pages, "ome-zarr", tmp_path / "p.ome.zarr", roi={"z": (5, 6)})
    assert plan.chunks[0] == 1


def test_cubic_rule():
    assert cubic_chunks(("z", "y", "x"), (1024,) * 3, 2, 4 * 2**20, {}) == (128, 128, 128)
    assert cubic_chunks(("c", "z", "y", "x"), (3, 500, 60, 2000), 1, 2**20, {0: 3}) == (
        3,
        64,
        60,
        64,
    )
    assert cubic_chunks(("t", "z", "y", "x"), (9, 1, 4096, 4096), 2, 2**21, {}) == (
        1,
        1,
        1024,
        1024,
    )
