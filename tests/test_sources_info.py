"""What ``info`` shows of a source's chunks (issue 13 item 24): the file's chunks and the dask
blocks where they differ, shards, the chunks of N5 and HDF5, a dask array's chunks and none for
npy. Each test failed before its fix.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr

import lazyexport as le
from lazyexport.cli import main

pytestmark = pytest.mark.usefixtures("small_blocks")


def test_item24_info_shows_the_file_chunks_and_the_dask_blocks_where_they_differ(tmp_path, capsys):
    arr = zarr.create_array(
        store=str(tmp_path / "c.zarr"),
        shape=(40, 600, 600),
        dtype="uint8",
        chunks=(10, 64, 64),
        zarr_format=3,
    )
    d = le.describe(str(tmp_path / "c.zarr"))
    assert d.chunks == (10, 64, 64) and d.shards is None
    assert d.blocks != d.chunks
    assert main(["info", str(tmp_path / "c.zarr")]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["chunks"] == "(10, 64, 64)"
    assert "shards" not in lines
    assert lines["blocks"].startswith(str(d.blocks))
    del arr


def test_item24_info_shows_shards(tmp_path, capsys):
    zarr.create_array(
        store=str(tmp_path / "s.zarr"),
        shape=(20, 256, 256),
        dtype="uint8",
        chunks=(5, 32, 32),
        shards=(10, 128, 128),
        zarr_format=3,
    )
    d = le.describe(str(tmp_path / "s.zarr"))
    assert d.chunks == (5, 32, 32) and d.shards == (10, 128, 128)
    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["chunks"] == "(5, 32, 32)" and lines["shards"] == "(10, 128, 128)"


def test_item24_info_of_n5_and_hdf5_shows_their_chunks(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("raw", shape=(30, 300, 300), dtype="uint8", chunks=(3, 30, 30))
    assert le.describe(str(tmp_path / "a.h5/raw")).chunks == (3, 30, 30)
    settings = le.ExportSettings(
        format="n5", output=str(tmp_path / "b.n5"), chunks=dict(z=5, y=20, x=40)
    )
    le.export(np.zeros((30, 300, 300), np.uint8), settings)
    d = le.describe(str(tmp_path / "b.n5"))
    assert d.chunks == (5, 20, 40) and d.blocks != d.chunks


def test_item24_info_of_a_dask_array_shows_its_chunks_and_of_npy_none(tmp_path):
    import dask.array as da

    d = le.describe(da.zeros((40, 64, 64), chunks=(8, 32, 64)))
    assert (
        d.chunked
        and d.chunks == (8, 32, 64)
        and "not chunked" not in str(d)
        and "blocks" not in str(d)
    )
    np.save(tmp_path / "v.npy", np.zeros((4, 4)))
    assert "chunks    none (not chunked)" in str(le.describe(str(tmp_path / "v.npy")))
