"""The copy path without waste (issue 30): a piece the steps leave unchanged is decoded straight
into the block (no piece array, no copy), a chunk of only a zero fill value is found without a
temporary and still left out as zarr leaves it out, and an export on the default scheduler
never imports ``distributed``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

import lazyexport as le
from lazyexport.chunkio import ChunkFiles


def _source(path, dtype="uint16", shape=(20, 40, 36), chunks=(4, 16, 16)):
    rng = np.random.default_rng(3)
    values = rng.integers(0, 1000, shape).astype(dtype)
    arr = zarr.create_array(
        str(path), shape=shape, dtype=dtype, chunks=chunks, compressors=ZstdCodec(level=3)
    )
    arr[...] = values
    return values


def test_read_into_fills_a_strided_view_with_the_region(tmp_path):
    values = _source(tmp_path / "src.zarr")
    files = ChunkFiles.of(zarr.open_array(str(tmp_path / "src.zarr"), mode="r"))
    assert files is not None
    block = np.zeros((10, 50, 50), dtype="uint16")
    view = block[2:9, 5:35, 3:30]  # not contiguous; the region cuts chunks
    got = files.read_into(view, (slice(3, 10), slice(7, 37), slice(2, 29)))
    assert got is view
    np.testing.assert_array_equal(view, values[3:10, 7:37, 2:29])
    assert not block[:2].any() and not block[9:].any()  # nothing written outside the view
    with pytest.raises(ValueError, match="read_into needs"):
        files.read_into(np.zeros((2, 2, 2), "uint16"), (slice(0, 3), slice(0, 2), slice(0, 2)))


def test_a_plain_copy_decodes_into_the_block(tmp_path, monkeypatch):
    values = _source(tmp_path / "src.zarr")
    calls = []
    original = ChunkFiles.read_into

    def counted(self, out, key):
        calls.append(key)
        return original(self, out, key)

    monkeypatch.setattr(ChunkFiles, "read_into", counted)
    out = tmp_path / "out.zarr"
    settings = le.ExportSettings(format="zarr", output=str(out), roi={"z": (1, 19)})
    le.export(str(tmp_path / "src.zarr"), settings)
    assert calls, "the copy did not read into the block"
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...], values[1:19])
    calls.clear()  # a step on values: pieces are read and transformed, as before
    renorm = tmp_path / "renorm.zarr"
    settings = le.ExportSettings(
        format="zarr", output=str(renorm), renormalize=((0, 1000), (0, 1)), dtype="float32"
    )
    le.export(str(tmp_path / "src.zarr"), settings)
    assert not calls
    want = values.astype("float32") / np.float32(1000)
    got = np.asarray(zarr.open_array(str(renorm), mode="r")[...])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    "dtype, chunk, stored",
    [
        ("float32", [-0.0] * 4, False),  # -0.0 == 0.0: the fill value, as zarr sees it
        ("float32", [0.0, 0.0, np.nan, 0.0], True),
        ("float64", [0.0, 0.0, 0.0, 1e-300], True),
        ("int16", [0, 0, 0, 0], False),
        ("int16", [0, -1, 0, 0], True),
        ("bool", [False] * 4, False),
        ("bool", [False, True, False, False], True),
    ],
)
def test_a_chunk_of_only_the_zero_fill_value_is_not_stored(tmp_path, dtype, chunk, stored):
    path = tmp_path / "out.zarr"
    arr = zarr.create_array(str(path), shape=(8,), dtype=dtype, chunks=(4,), fill_value=0)
    files = ChunkFiles.of(arr)
    assert files is not None
    files.write(np.array(chunk + [1] * 4, dtype=dtype), (slice(0, 8),))
    assert (path / "c" / "0").exists() is stored
    assert (path / "c" / "1").exists()
    np.testing.assert_array_equal(
        zarr.open_array(str(path), mode="r")[:4], np.array(chunk, dtype=dtype)
    )


def test_an_export_on_the_default_scheduler_does_not_import_distributed(tmp_path):
    _source(tmp_path / "src.zarr")
    code = (
        "import sys, lazyexport as le\n"
        f"le.export({str(tmp_path / 'src.zarr')!r}, "
        f"le.ExportSettings(format='zarr', output={str(tmp_path / 'o.zarr')!r}))\n"
        "assert 'distributed' not in sys.modules, 'distributed was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "o.zarr" / "zarr.json").exists()


@pytest.mark.parametrize("fill", [0, 7, float("nan")])
def test_a_chunk_whose_other_values_lie_past_its_first_elements_is_stored(tmp_path, fill):
    # the first 4 KiB of a chunk are looked at first: a chunk all fill there is looked at whole
    dtype = "float32" if fill != fill else "uint16"
    path = tmp_path / "out.zarr"
    arr = zarr.create_array(
        str(path), shape=(3, 4096), dtype=dtype, chunks=(1, 4096), fill_value=fill
    )
    files = ChunkFiles.of(arr)
    assert files is not None
    data = np.full((3, 4096), fill, dtype=dtype)
    data[0, -1] = 1  # its last element only
    data[2, 0] = 1  # its first
    files.write(data, (slice(0, 3), slice(0, 4096)))
    assert [(path / "c" / str(i) / "0").exists() for i in range(3)] == [True, False, True]
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[...], data)


def test_a_copy_plans_blocks_whose_chunks_are_contiguous(tmp_path):
    # a block whose chunks are not contiguous runs of it copies each one in after decoding it
    # and out before encoding it (4 % of the 4 GiB copy's CPU in benchmarks/limit.py): the
    # planner stacks whole chunks along the first axis instead, at the same number of tasks
    shape, chunks = (512, 2048, 2048), (16, 256, 256)
    zarr.create_array(str(tmp_path / "big.zarr"), shape=shape, dtype="uint16", chunks=chunks)
    settings = le.ExportSettings(
        format="zarr", output=str(tmp_path / "out.zarr"), chunks=dict(zip("zyx", chunks))
    )
    block = le.plan(str(tmp_path / "big.zarr"), settings).priced.block
    assert block[1:] == chunks[1:] and block[0] % chunks[0] == 0, block


@pytest.mark.parametrize("fmt", ["npy", "tiff"])
def test_formats_that_write_rows_into_one_file_keep_wide_blocks(tmp_path, fmt):
    # their writes are runs of whole rows: a block of narrow columns would be many small writes
    zarr.create_array(
        str(tmp_path / "big.zarr"), shape=(512, 2048, 2048), dtype="uint16", chunks=(16, 256, 256)
    )
    settings = le.ExportSettings(format=fmt, output=str(tmp_path / f"out.{fmt}"))
    block = le.plan(str(tmp_path / "big.zarr"), settings).priced.block
    assert block[2] == 2048, block


def test_a_copy_decodes_and_encodes_every_chunk_in_place(tmp_path, monkeypatch):
    shape, chunks = (64, 1024, 1024), (16, 512, 512)
    values = (np.arange(np.prod(shape), dtype="uint32") % 65521).astype("uint16").reshape(shape)
    src = zarr.create_array(
        str(tmp_path / "src.zarr"),
        shape=shape,
        dtype="uint16",
        chunks=chunks,
        compressors=ZstdCodec(level=1),
    )
    src[...] = values
    scratch, copied = [], []
    load, store = ChunkFiles._load, ChunkFiles._store

    def loading(self, index, out=None):
        scratch.append(out is None)  # decoded into a scratch chunk, then copied in
        return load(self, index, out)

    def storing(self, index, chunk):
        copied.append(chunk.base is None)  # a copy of the block's part, not a view of it
        return store(self, index, chunk)

    monkeypatch.setattr(ChunkFiles, "_load", loading)
    monkeypatch.setattr(ChunkFiles, "_store", storing)
    out = tmp_path / "out.zarr"
    settings = le.ExportSettings(format="zarr", output=str(out), chunks=dict(zip("zyx", chunks)))
    le.export(str(tmp_path / "src.zarr"), settings)
    assert len(scratch) == len(copied) == 16 and not any(scratch) and not any(copied)
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...], values)
