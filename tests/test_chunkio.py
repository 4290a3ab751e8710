"""Direct chunk I/O (lazyexport.chunkio) against zarr itself: the same values read, and chunk
files zarr reads back as written, byte-identical to the files zarr writes."""

from __future__ import annotations

from typing import Any, cast

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, GzipCodec, TransposeCodec, ZstdCodec
from zarr.core.array import ShardsConfigParam

from helpers.zarr_nodes import read
from lazyexport.chunkio import ChunkFiles, ShardFiles

SHAPE, CHUNKS = (7, 13, 10), (3, 4, 5)  # edge chunks on every axis


def files_of(arr: zarr.Array) -> ChunkFiles:
    """`ChunkFiles.of(arr)` for an array whose layout it handles (the test relies on it)."""
    files = ChunkFiles.of(arr)
    assert files is not None, arr
    return files


LAYOUTS: dict[str, dict[str, Any]] = {
    "v3-zstd": dict(zarr_format=3, compressors=ZstdCodec(level=3)),
    "v3-blosc": dict(zarr_format=3, compressors=BloscCodec(cname="lz4", clevel=5)),
    "v3-gzip": dict(zarr_format=3, compressors=GzipCodec(level=1)),
    "v3-none": dict(zarr_format=3, compressors=None),
    "v2-zstd": dict(zarr_format=2, compressors=numcodecs.Zstd(level=1)),
    "v2-zlib": dict(zarr_format=2, compressors=numcodecs.Zlib(level=1)),
    "v2-none": dict(zarr_format=2, compressors=None),
}


def make(path, layout, dtype="uint16", fill=0):
    arr = zarr.create_array(
        str(path), shape=SHAPE, chunks=CHUNKS, dtype=dtype, fill_value=fill, **LAYOUTS[layout]
    )
    data = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 251).astype(dtype)
    data[:3, :4, :5] = fill  # one chunk left unwritten by zarr
    arr[...] = data
    return arr, data


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_reads_equal_zarr(tmp_path, layout):
    arr, data = make(tmp_path / "a.zarr", layout, dtype="float32", fill=0.5)
    files = ChunkFiles.of(zarr.open_array(str(tmp_path / "a.zarr"), mode="r"))
    assert files is not None
    np.testing.assert_array_equal(files[...], data)
    np.testing.assert_array_equal(files[1:6, 3:13, 4:5], arr[1:6, 3:13, 4:5])
    assert files[2:2, :, :].shape == (0, 13, 10)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=3, max_size=3))
def test_any_region_reads_like_zarr(tmp_path_factory, bounds):
    path = tmp_path_factory.mktemp("r") / "a.zarr"
    arr, data = make(path, "v3-zstd")
    files = files_of(arr)
    region = tuple(slice(min(a, b), max(a, b)) for a, b in bounds)
    np.testing.assert_array_equal(files[region], data[region])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_writes_files_zarr_reads_and_would_write(tmp_path, layout):
    ref, data = make(tmp_path / "ref.zarr", layout)
    mine = zarr.create_array(
        str(tmp_path / "mine.zarr"),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="uint16",
        fill_value=0,
        **LAYOUTS[layout],
    )
    files = files_of(mine)
    files.write(data[:3], (slice(0, 3), slice(None), slice(None)))  # whole chunks ...
    files.write(data[3:], (slice(3, 7), slice(None), slice(None)))  # ... and edge chunks
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "mine.zarr"), mode="r")[...], data)
    ref_files = sorted(
        p.relative_to(tmp_path / "ref.zarr")
        for p in (tmp_path / "ref.zarr").rglob("*")
        if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs")
    )
    mine_files = sorted(
        p.relative_to(tmp_path / "mine.zarr")
        for p in (tmp_path / "mine.zarr").rglob("*")
        if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs")
    )
    assert mine_files == ref_files  # the fill-only chunk is not stored by either
    for rel in ref_files:
        assert _without_gzip_time(
            (tmp_path / "mine.zarr" / rel).read_bytes()
        ) == _without_gzip_time((tmp_path / "ref.zarr" / rel).read_bytes()), rel


def _without_gzip_time(chunk: bytes) -> bytes:
    """A gzip member records the second it was written (header bytes 4-7, RFC 1952): two files
    written a second apart differ there and nowhere else, so those bytes are not compared."""
    if chunk[:2] == b"\x1f\x8b":
        return chunk[:4] + b"\0\0\0\0" + chunk[8:]
    return chunk


def test_write_refuses_partial_chunks(tmp_path):
    arr, data = make(tmp_path / "a.zarr", "v3-zstd")
    with pytest.raises(ValueError, match="whole chunks"):
        files_of(arr).write(data[1:3], (slice(1, 3), slice(None), slice(None)))


def test_layouts_zarr_must_handle_itself(tmp_path):
    sharded = zarr.create_array(
        str(tmp_path / "s.zarr"),
        shape=(8, 8),
        chunks=(2, 2),
        dtype="u1",
        shards=cast(ShardsConfigParam, {"shape": (4, 4), "index_location": "start"}),
    )  # not the default index
    transposed = zarr.create_array(
        str(tmp_path / "t.zarr"),
        shape=(8, 8),
        chunks=(2, 2),
        dtype="u1",
        filters=[TransposeCodec(order=(1, 0))],
    )
    in_memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(8, 8), chunks=(2, 2), dtype="u1"
    )
    big_endian = zarr.create_array(
        str(tmp_path / "b.zarr"), shape=(8, 8), chunks=(2, 2), dtype=">u2", zarr_format=2
    )
    for arr in (sharded, transposed, in_memory, big_endian):
        assert ChunkFiles.of(arr) is None, arr


def test_integer_and_ellipsis_keys(tmp_path):
    arr, data = make(tmp_path / "a.zarr", "v2-zstd")
    files = files_of(arr)
    np.testing.assert_array_equal(files[2, ..., 3:7], data[2, ..., 3:7])
    np.testing.assert_array_equal(files[-1], data[-1])
    with pytest.raises(IndexError):
        files[7]


# ---------------------------------------------------------------- sharded arrays

SHARDS = (6, 8, 10)  # 2 x 2 x 1 shards over SHAPE, the edge ones partly outside the array


def make_sharded(path, layout, dtype="uint16", fill=0):
    arr = zarr.create_array(
        str(path),
        shape=SHAPE,
        chunks=CHUNKS,
        shards=SHARDS,
        dtype=dtype,
        fill_value=fill,
        **LAYOUTS[layout],
    )
    data = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 251).astype(dtype)
    data[:3, :4, :5] = fill  # an inner chunk of only the fill value
    data[6:, 8:, :] = fill  # a whole shard of it
    arr[...] = data
    return arr, data


def shard_files(path):
    return sorted(
        p.relative_to(path) for p in path.rglob("*") if p.is_file() and p.name != "zarr.json"
    )


V3 = [name for name in LAYOUTS if name.startswith("v3")]


@pytest.mark.parametrize("layout", V3)
def test_reads_shards_zarr_wrote(tmp_path, layout):
    arr, data = make_sharded(tmp_path / "a.zarr", layout, dtype="float32", fill=0.5)
    files = files_of(zarr.open_array(str(tmp_path / "a.zarr"), mode="r"))
    assert isinstance(files, ShardFiles) and files.chunks == SHARDS and files.inner == CHUNKS
    np.testing.assert_array_equal(files[...], data)
    np.testing.assert_array_equal(files[1:7, 3:13, 4:5], data[1:7, 3:13, 4:5])


@pytest.mark.parametrize("layout", V3)
def test_writes_shards_zarr_and_tensorstore_read(tmp_path, layout):
    import tensorstore as ts

    _, data = make_sharded(tmp_path / "ref.zarr", layout)
    mine = zarr.create_array(
        str(tmp_path / "mine.zarr"),
        shape=SHAPE,
        chunks=CHUNKS,
        shards=SHARDS,
        dtype="uint16",
        fill_value=0,
        **LAYOUTS[layout],
    )
    files = files_of(mine)
    files.write(data[:6], (slice(0, 6), slice(None), slice(None)))  # whole shards ...
    files.write(data[6:], (slice(6, 7), slice(None), slice(None)))  # ... and edge shards
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "mine.zarr"), mode="r")[...], data)
    store = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / "mine.zarr")}}
    ).result()
    np.testing.assert_array_equal(store.read().result(), data)
    # the same shard files as zarr's: the shard of only the fill value is stored by neither
    assert shard_files(tmp_path / "mine.zarr") == shard_files(tmp_path / "ref.zarr")
    assert len(shard_files(tmp_path / "mine.zarr")) == 3
    # rewriting a shard with only the fill value removes its file
    files.write(np.zeros((6, 8, 10), "uint16"), (slice(0, 6), slice(0, 8), slice(0, 10)))
    assert len(shard_files(tmp_path / "mine.zarr")) == 2
    assert not read(zarr.open_array(str(tmp_path / "mine.zarr"), mode="r"), np.s_[:6, :8]).any()


def test_write_refuses_partial_shards(tmp_path):
    arr, data = make_sharded(tmp_path / "a.zarr", "v3-zstd")
    with pytest.raises(ValueError, match="whole chunks"):
        files_of(arr).write(
            data[:3], (slice(0, 3), slice(None), slice(None))
        )  # whole inner chunks only


def test_a_damaged_shard_index_is_reported(tmp_path):
    arr, _ = make_sharded(tmp_path / "a.zarr", "v3-zstd")
    shard = tmp_path / "a.zarr" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged"):
        files_of(arr)[...]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=3, max_size=3))
def test_any_region_of_shards_reads_like_zarr(tmp_path_factory, bounds):
    path = tmp_path_factory.mktemp("s") / "a.zarr"
    arr, data = make_sharded(path, "v3-gzip")
    files = files_of(arr)
    region = tuple(slice(min(a, b), max(a, b)) for a, b in bounds)
    np.testing.assert_array_equal(files[region], data[region])


def test_shard_reads_decode_only_the_inner_chunks_asked_for(tmp_path):
    arr, data = make_sharded(tmp_path / "a.zarr", "v3-none")
    files = files_of(arr)
    shard = tmp_path / "a.zarr" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    spans = np.frombuffer(bytes(raw[-4 - 16 * 8 : -4]), "<u8").reshape(2, 2, 2, 2)
    offset, nbytes = (int(v) for v in spans[1, 1, 1])  # inner chunk z 3:6, y 4:8, x 5:10
    raw[offset : offset + nbytes] = b"\xff" * nbytes  # damage that chunk only
    shard.write_bytes(bytes(raw))
    np.testing.assert_array_equal(
        files[:3, :8, :], data[:3, :8, :]
    )  # other inner chunks of the shard
    assert (files[3:6, 4:8, 5:10] == 0xFFFF).all()  # the damaged one is read when asked


def test_chunks_of_only_nan_fill_are_left_out_like_zarr(tmp_path):
    arrays = {}
    for name in ("ref", "mine"):
        arrays[name] = zarr.create_array(
            str(tmp_path / f"{name}.zarr"),
            shape=(8, 8),
            chunks=(2, 2),
            shards=(4, 4),
            dtype="float32",
            fill_value=float("nan"),
        )
    data = np.full((8, 8), np.nan, dtype="float32")
    data[0, 0], data[5, 6] = 1.0, 2.0
    arrays["ref"][...] = data
    files_of(arrays["mine"]).write(data, (slice(0, 8), slice(0, 8)))
    assert shard_files(tmp_path / "mine.zarr") == shard_files(
        tmp_path / "ref.zarr"
    )  # the NaN-only shards: neither
    spans = np.frombuffer(
        (tmp_path / "mine.zarr" / "c" / "0" / "0").read_bytes()[-4 - 64 : -4], "<u8"
    )
    assert (spans.reshape(4, 2)[:, 0] != 2**64 - 1).sum() == 1  # one inner chunk of four
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "mine.zarr"))[...], data)


# ---------------------------------------------------------------- the layouts lazyexport creates

CREATED = [
    dict(zarr_format=zarr_format, compression=compression, shards=shards)
    for zarr_format in (2, 3)
    for compression in ("zstd", "blosc", "gzip", "none")
    for shards in ((None, {"y": 8, "x": 10}) if zarr_format == 3 else (None,))
]


@pytest.mark.parametrize(
    "layout",
    CREATED,
    ids=lambda c: f"v{c['zarr_format']}-{c['compression']}" + ("-sharded" * bool(c["shards"])),
)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_the_layouts_lazyexport_creates_are_read_and_written_directly(tmp_path, layout, dtype):
    """Every Zarr layout lazyexport writes (each format version and compressor, sharded or not)
    is one the direct chunk I/O takes, on whichever zarr-python is installed: the plan's memory
    promise for Zarr outputs, and the decode-once counts of Zarr sources, rest on it. A zarr
    release that changes how it describes these layouts must fail here, not switch the fast
    path off silently."""
    import lazyexport as le
    from lazyexport.chunkio import layout_refusal

    data = (np.arange(6 * 16 * 20).reshape(6, 16, 20) % 251).astype(dtype)
    result = le.export(
        data,
        le.ExportSettings(
            format="zarr", output=str(tmp_path / "out.zarr"), chunks={"y": 4, "x": 5}, **layout
        ),
    )
    arr = zarr.open_array(str(result.paths[0]), mode="r")
    files = files_of(arr)
    assert files is not None, f"zarr {zarr.__version__}: {layout_refusal(arr)}"
    assert isinstance(files, ShardFiles) == bool(layout["shards"])
    np.testing.assert_array_equal(files[...], data)
    np.testing.assert_array_equal(arr[...], data)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_every_ome_zarr_level_is_read_directly(tmp_path, zarr_format):
    import lazyexport as le
    from lazyexport.chunkio import layout_refusal

    data = (np.arange(4 * 64 * 64).reshape(4, 64, 64) % 251).astype("uint16")
    result = le.export(
        data,
        le.ExportSettings(
            format="ome-zarr", output=str(tmp_path / "out.ome.zarr"), zarr_format=zarr_format
        ),
    )
    group = zarr.open_group(str(result.paths[0]), mode="r")
    levels = [arr for _, arr in group.arrays()]
    assert levels
    for arr in levels:
        assert ChunkFiles.of(arr) is not None, f"{arr.path}: {layout_refusal(arr)}"
        np.testing.assert_array_equal(files_of(arr)[...], arr[...])


def test_a_shard_is_written_one_encoded_inner_chunk_at_a_time(tmp_path):
    """Writing a shard holds one encoded inner chunk, never the encoded shard: the shard here is
    8 MiB of incompressible values in 128 KiB inner chunks, and the write's own allocations
    stay under 1 MiB (holding the encoded parts until the end took over 8 MiB)."""
    import tracemalloc

    shape = (64, 256, 256)
    arr = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=shape,
        chunks=(16, 64, 64),
        shards=shape,
        dtype="uint16",
        compressors=ZstdCodec(level=1),
    )
    files = files_of(arr)
    data = np.random.default_rng(0).integers(0, 2**16, size=shape, dtype="uint16")
    tracemalloc.start()
    try:
        files.write(data, tuple(slice(0, n) for n in shape))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak / 2**20:.1f} MiB held while writing an 8 MiB shard"
    np.testing.assert_array_equal(arr[...], data)


def test_ome_zarr_levels_after_the_blocks_are_read_and_written_through_chunk_files(
    tmp_path, monkeypatch
):
    """Local levels built after the blocks go through the chunk files as level 0 does (zarr's
    sharding codec would hold each encoded shard twice besides the assembled one)."""
    import lazyexport as le

    written: list[str] = []
    write = ChunkFiles.write

    def spy(self, block, location):
        written.append(self.root.name)
        return write(self, block, location)

    monkeypatch.setattr(ChunkFiles, "write", spy)
    data = (np.arange(32 * 64 * 64).reshape(32, 64, 64) % 251).astype("uint16")
    out = tmp_path / "out.ome.zarr"
    le.export(
        data, le.ExportSettings(format="ome-zarr", output=str(out), levels=4, chunks={"z": 8})
    )
    assert {"0", "1", "2", "3"} <= set(written)
    group = zarr.open_group(str(out), mode="r")
    level_2 = cast(zarr.Array, group["2"])
    expected = data
    for _ in range(2):  # each level the mean of the level below, rounded half to even
        z, y, x = (n // 2 for n in expected.shape)
        expected = np.round(expected.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5)))
    np.testing.assert_array_equal(level_2[...], expected.astype("uint16"))


def test_a_shard_whose_encoding_fails_leaves_no_file(tmp_path, monkeypatch):
    """Inner chunks go to the file as they are encoded: an error part way removes the file (a
    shard file without its index would not read back)."""
    shape = (8, 16, 16)
    arr = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=shape, chunks=(4, 8, 8), shards=shape, dtype="uint16"
    )
    files = files_of(arr)
    encode = files._encode
    calls = []

    def failing(chunk):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return encode(chunk)

    monkeypatch.setattr(files, "_encode", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        files.write(np.ones(shape, "uint16"), tuple(slice(0, n) for n in shape))
    assert not [p for p in (tmp_path / "a.zarr").rglob("*") if p.is_file() and "c" in p.parts]
