"""Byte order: values are stored in the byte order the output's metadata declares, whatever the
source's (issue #26, item 1).

Big-endian sources (in memory, a ``>f4`` .npy, a big-endian Zarr v2 store, an HDF5 dataset) are
exported to every format; each output is read back with the format's own reader (zarr, h5py,
tensorstore for N5, tifffile, Pillow, numpy) and with :func:`lazyexport.open_exported`, and
compared with the source's values. For Zarr and N5 the raw bytes of a chunk file are also
compared with the values in the byte order the metadata declares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import dask
import h5py
import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers import run_cli
from helpers.zarr_nodes import read_all

SHAPE = (3, 6, 10)  # z, y, x
BIG = (">u2", ">f4", ">i4")


def big_endian(dtype: str, shape=SHAPE) -> np.ndarray:
    """Values whose bytes are not palindromes (a byte swap changes every one of them)."""
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    values: np.ndarray
    if dt.kind == "f":
        values = np.arange(n, dtype=np.float64) * 1.25 + 0.5
    elif dt.kind == "i":
        values = np.arange(n, dtype=np.int64) * 257 - 700
    else:
        values = np.arange(n, dtype=np.int64) * 257 + 1
    return values.reshape(shape).astype(dt)


# format -> (ExportSettings fields, output name, dtypes it holds)
FORMATS: dict[str, tuple[dict[str, Any], str, tuple[str, ...] | None]] = {
    "zarr-v3": ({"format": "zarr", "compression": "none"}, "out.zarr", None),
    "zarr-v2": ({"format": "zarr", "zarr_format": 2, "compression": "none"}, "out.zarr", None),
    "zarr-v3-compressed": ({"format": "zarr"}, "out.zarr", None),
    "zarr-sharded": (
        {"format": "zarr", "chunks": {"z": 1, "y": 3, "x": 5}, "shards": {"z": 3, "y": 6, "x": 10}},
        "out.zarr",
        None,
    ),
    "ome-zarr-0.5": ({"format": "ome-zarr", "levels": 1}, "out.ome.zarr", None),
    "ome-zarr-0.4": ({"format": "ome-zarr", "levels": 1, "zarr_format": 2}, "out.ome.zarr", None),
    "hdf5": ({"format": "hdf5"}, "out.h5", None),
    "n5": ({"format": "n5", "compression": "raw"}, "out.n5", None),
    "npy": ({"format": "npy"}, "out.npy", None),
    "tiff": ({"format": "tiff"}, "out.tif", None),
    "tiff-sequence": ({"format": "tiff-sequence"}, "s/z{slice_index}.tif", None),
    "png-sequence": ({"format": "png-sequence"}, "p/z{slice_index}.png", (">u2",)),
}


def read_independently(result) -> np.ndarray:
    """The exported array (zyx) as the format's own reader gives it."""
    fmt, out = result.format, Path(result.output)
    if fmt == "zarr":
        return read_all(zarr.open_array(str(out), mode="r"))
    if fmt == "ome-zarr":
        return read_all(zarr.open_group(str(out), mode="r")["0"])
    if fmt == "hdf5":
        with h5py.File(out, "r") as f:
            return f[result.internal or "exported_data"][...]
    if fmt == "n5":
        import tensorstore as ts

        spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(out)}}
        return ts.open(spec, open=True).result().read().result().T  # N5's order is x first
    if fmt == "npy":
        return np.load(out)
    if fmt == "tiff":
        return tifffile.imread(out)
    if fmt == "tiff-sequence":
        return np.stack([tifffile.imread(p) for p in result.paths])
    if fmt == "png-sequence":
        from PIL import Image

        planes = []
        for p in result.paths:
            with Image.open(p) as image:
                planes.append(np.asarray(image))
        return np.stack(planes)
    raise AssertionError(fmt)


def declared_dtype(result) -> np.dtype | None:
    """The dtype (with byte order) the output's metadata declares, for the formats that store
    raw values in chunk files (None for the others)."""
    fmt, out = result.format, Path(result.output)
    array = out / "0" if fmt == "ome-zarr" else out
    if (array / "zarr.json").exists():
        meta = json.loads((array / "zarr.json").read_text())
        codecs = meta["codecs"]
        if codecs[0]["name"] == "sharding_indexed":
            codecs = codecs[0]["configuration"]["codecs"]
        (endian,) = [c["configuration"]["endian"] for c in codecs if c["name"] == "bytes"]
        return np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
    if (array / ".zarray").exists():
        return np.dtype(json.loads((array / ".zarray").read_text())["dtype"])
    if fmt == "n5":
        return np.dtype(json.loads((out / "attributes.json").read_text())["dataType"]).newbyteorder(
            ">"
        )  # N5 blocks are big-endian by the specification
    return None


def check_raw_chunk(result, expected: np.ndarray) -> None:
    """The first chunk file's bytes are the values in the declared byte order (uncompressed
    outputs)."""
    fmt, out = result.format, Path(result.output)
    declared = declared_dtype(result)
    if fmt == "zarr" and (out / "zarr.json").exists():
        meta = json.loads((out / "zarr.json").read_text())
        if meta["codecs"][0]["name"] != "bytes" or len(meta["codecs"]) != 1:
            return  # compressed or sharded: the readers' values say it
        chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        raw = (out / "c" / "0" / "0" / "0").read_bytes()
    elif fmt == "zarr":
        meta = json.loads((out / ".zarray").read_text())
        if meta["compressor"] is not None:
            return
        chunks = tuple(meta["chunks"])
        raw = (out / "0.0.0").read_bytes()
    elif fmt == "n5":
        attrs = json.loads((out / "attributes.json").read_text())
        if attrs["compression"]["type"] != "raw":
            return
        block = (out / "0" / "0" / "0").read_bytes()
        ndim = int.from_bytes(block[2:4], "big")
        size = tuple(int.from_bytes(block[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        chunks = size[::-1]
        raw = block[4 + 4 * ndim :]
    else:
        return
    corner = expected[tuple(slice(0, c) for c in chunks)]
    full = np.zeros(chunks, dtype=expected.dtype)
    full[tuple(slice(0, n) for n in corner.shape)] = corner
    if fmt == "n5":
        full = corner
    stored = np.frombuffer(raw, dtype=declared).reshape(full.shape)
    np.testing.assert_array_equal(stored, full, err_msg=f"{fmt}: raw chunk bytes")


def check_output(result, expected: np.ndarray) -> None:
    what = f"{result.format} {result.output}"
    got = read_independently(result)
    assert got.shape == expected.shape, what
    np.testing.assert_array_equal(got, expected, err_msg=f"{what}: independent reader")
    back = le.open_exported(result)
    np.testing.assert_array_equal(
        np.asarray(back.values), expected, err_msg=f"{what}: open_exported"
    )
    declared = declared_dtype(result)
    if declared is not None:
        assert declared.newbyteorder("=") == expected.dtype.newbyteorder("="), (what, declared)
    check_raw_chunk(result, expected)


CASES = [
    pytest.param(dtype, name, id=f"{dtype}-{name}")
    for dtype in BIG
    for name, (_, _, dtypes) in FORMATS.items()
    if dtypes is None or dtype in dtypes
]


@pytest.mark.parametrize("dtype, name", CASES)
def test_big_endian_memory_source_every_writer(dtype, name, tmp_path):
    fields, output, _ = FORMATS[name]
    data = big_endian(dtype)
    settings = le.ExportSettings(output=str(tmp_path / output), **fields)
    result = le.export(le.open_source(data, axes="zyx"), settings)
    check_output(result, data)


def test_the_issue_example_reads_back_its_values(tmp_path):
    """The issue's own example: Zarr v3 read back [256, 513, ...] instead of [1, 258, ...]."""
    a = (np.arange(6).reshape(1, 2, 3) * 257 + 1).astype(">u2")
    out = tmp_path / "o.zarr"
    le.export(le.open_source(a, axes="zyx"), le.ExportSettings(format="zarr", output=str(out)))
    assert read_all(zarr.open_array(str(out), mode="r")).ravel().tolist() == [
        1,
        258,
        515,
        772,
        1029,
        1286,
    ]


@pytest.mark.parametrize("name", ["zarr-v3", "zarr-sharded", "ome-zarr-0.5", "hdf5", "n5", "tiff"])
def test_big_endian_npy_source(name, tmp_path):
    fields, output, _ = FORMATS[name]
    data = big_endian(">f4")
    np.save(tmp_path / "src.npy", data)
    settings = le.ExportSettings(output=str(tmp_path / output), **fields)
    result = le.export(le.open_source(str(tmp_path / "src.npy")), settings)
    check_output(result, data)


@pytest.mark.parametrize("name", ["zarr-v3", "zarr-sharded", "ome-zarr-0.5", "npy"])
def test_big_endian_hdf5_source(name, tmp_path):
    fields, output, _ = FORMATS[name]
    data = big_endian(">i4")
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f.create_dataset("raw", data=data, chunks=(1, 3, 5))
    assert h5py.File(tmp_path / "src.h5", "r")["raw"].dtype == np.dtype(">i4")
    settings = le.ExportSettings(output=str(tmp_path / output), **fields)
    result = le.export(le.open_source(f"{tmp_path / 'src.h5'}/raw", axes="zyx"), settings)
    check_output(result, data)


def _zarr2_big_endian(path: Path, data: np.ndarray) -> None:
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=(1, 3, 5),
        zarr_format=2,
        attributes={"_ARRAY_DIMENSIONS": ["z", "y", "x"]},
    )
    arr[...] = data
    assert json.loads((path / ".zarray").read_text())["dtype"].startswith(">")


@pytest.mark.parametrize("fmt", ["zarr", "ome-zarr"])
def test_big_endian_zarr2_source_through_the_cli(fmt, tmp_path):
    data = big_endian(">u2")
    _zarr2_big_endian(tmp_path / "src.zarr", data)
    out = tmp_path / "out.zarr"
    done = run_cli("export", tmp_path / "src.zarr", "--format", fmt, "--output", out)
    assert done.returncode == 0, done.stderr
    array = zarr.open_array(str(out / "0" if fmt == "ome-zarr" else out), mode="r")
    np.testing.assert_array_equal(array[...], data)
    np.testing.assert_array_equal(np.asarray(le.open_source(str(out)).values), data)


@pytest.mark.parametrize("name", ["zarr-v3", "zarr-v2", "zarr-sharded", "ome-zarr-0.5", "hdf5"])
def test_big_endian_zarr2_source(name, tmp_path):
    fields, output, _ = FORMATS[name]
    data = big_endian(">f4")
    _zarr2_big_endian(tmp_path / "src.zarr", data)
    settings = le.ExportSettings(output=str(tmp_path / output), **fields)
    result = le.export(le.open_source(str(tmp_path / "src.zarr")), settings)
    check_output(result, data)


@pytest.mark.parametrize("name", ["zarr-v3", "zarr-sharded", "ome-zarr-0.5", "hdf5", "n5", "npy"])
def test_big_endian_lazy_export(name, tmp_path):
    """compute=False: the blocks come from the source's dask graph, not the block tasks."""
    fields, output, _ = FORMATS[name]
    data = big_endian(">u2")
    np.save(tmp_path / "src.npy", data)
    settings = le.ExportSettings(output=str(tmp_path / output), **fields)
    lazy = le.export(le.open_source(str(tmp_path / "src.npy")), settings, compute=False)
    (result,) = dask.compute(lazy, scheduler="threads")
    check_output(result, data)


def test_big_endian_lazy_exports_of_one_source_computed_together(tmp_path):
    data = big_endian(">i4")
    source = le.open_source(data, axes="zyx")
    lazies = [
        le.export(
            source,
            le.ExportSettings(output=str(tmp_path / f"{i}{FORMATS[n][1]}"), **FORMATS[n][0]),
            compute=False,
        )
        for i, n in enumerate(["zarr-v3", "zarr-sharded", "ome-zarr-0.5"])
    ]
    for result in dask.compute(*lazies):
        check_output(result, data)


@pytest.mark.parametrize("name", ["zarr-v3", "hdf5"])
def test_big_endian_processes(name, tmp_path):
    """Blocks computed in other processes (pickled sources and targets; HDF5 encodes there)."""
    fields, output, _ = FORMATS[name]
    data = big_endian(">f4")
    np.save(tmp_path / "src.npy", data)
    settings = le.ExportSettings(output=str(tmp_path / output), **fields)
    result = le.export(le.open_source(str(tmp_path / "src.npy")), settings, scheduler="processes")
    check_output(result, data)


@pytest.mark.parametrize("dtype", BIG)
def test_big_endian_source_exports_as_its_little_endian_twin(dtype, tmp_path):
    """With a renormalization and a conversion, a big-endian source gives exactly what the same
    values in native byte order give (the same computation type, float32 for 16-bit integers)."""
    data = big_endian(dtype)
    twin = data.astype(data.dtype.newbyteorder("="))
    outputs = []
    for name, array in (("big", data), ("native", twin)):
        settings = le.ExportSettings(
            format="zarr",
            output=str(tmp_path / f"{name}.zarr"),
            renormalize=((float(twin.min()), float(twin.max())), (0.0, 1.0)),
        )
        result = le.export(le.open_source(array, axes="zyx"), settings)
        outputs.append(read_all(zarr.open_array(str(result.output), mode="r")))
    assert outputs[0].dtype == outputs[1].dtype
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.skipif(sys.byteorder != "little", reason="the outputs' byte order on this machine")
def test_plan_result_is_in_native_byte_order():
    """The output dtype is decided once (the plan): native byte order, whatever the source's."""
    plan = le.plan(le.open_source(big_endian(">u2"), axes="zyx"), le.ExportSettings(format="zarr"))
    assert plan.dtype == np.dtype("<u2")
    assert plan.result.dtype == np.dtype("<u2")


@pytest.mark.parametrize(
    "zarr_format, shards", [(3, None), (3, (3, 6, 10)), (2, None)], ids=["v3", "v3-sharded", "v2"]
)
def test_chunk_files_store_blocks_in_the_declared_byte_order(zarr_format, shards, tmp_path):
    """The hand-written chunk writer converts a block of another byte order to the array's
    (it must never write a block's bytes as they are)."""
    from lazyexport.chunkio import ChunkFiles

    arr = zarr.create_array(
        store=str(tmp_path / "a.zarr"),
        shape=SHAPE,
        chunks=(1, 3, 5),
        shards=shards,
        dtype="<u2",
        compressors=None,
        zarr_format=zarr_format,
    )
    files = ChunkFiles.of(arr)
    assert files is not None, "the layout is one the direct chunk I/O takes"
    data = big_endian(">u2")
    files.write(data, tuple(slice(0, n) for n in SHAPE))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[...], data)
    np.testing.assert_array_equal(files[...], data)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_big_endian_source_ome_zarr_pyramid(zarr_format, tmp_path):
    """The coarser levels, made from level 0 read back, hold the source's values too."""
    data = big_endian(">u2", (4, 8, 12))
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(tmp_path / "out.ome.zarr"),
        levels=2,
        downsample="nearest",
        zarr_format=zarr_format,
    )
    result = le.export(le.open_source(data, axes="zyx"), settings)
    group = zarr.open_group(str(result.output), mode="r")
    np.testing.assert_array_equal(read_all(group["0"]), data)
    np.testing.assert_array_equal(read_all(group["1"]), data[::2, ::2, ::2])
