"""Export, then read back with an independent reader (h5py, zarr, tifffile) and compare with a
numpy reference computed straight from the source data by the formulas of docs/usage.md.

Also: every kind of source opens with the right axes, shape, dtype and values; ``describe``;
``open_exported`` gives back the output axis order.
"""

from __future__ import annotations

import importlib
import json
import os
import zlib
from typing import Any

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

from helpers import (
    FILE_KINDS,
    SHAPE,
    WRITERS,
    hidden_temps,
    make_data,
    write_hdf5,
    write_zarr2,
    write_zarr3,
)
from helpers.zarr_nodes import as_array, dimension_names, read_all
from lazyexport import ExportSettings, describe, export, open_exported, open_source
from lazyexport.transforms import compute_dtype

# ---------------------------------------------------------------------------------------------
# the numpy reference


def absolute_roi(roi: dict, axes: str, shape) -> dict[str, tuple[int, int]]:
    """Python slicing semantics, written out: None = start/end, negatives count from the end."""
    out = {}
    for axis, size in zip(axes, shape):
        start, stop = roi.get(axis, (None, None))
        start = 0 if start is None else (start + size if start < 0 else start)
        stop = size if stop is None else (stop + size if stop < 0 else stop)
        out[axis] = (start, stop)
    return out


def to_order(x: np.ndarray, axes: str, order: str) -> np.ndarray:
    """Transpose ``x`` (in ``axes``) to ``order``, adding missing axes with length 1."""
    for a in order:
        if a not in axes:
            x = x[..., np.newaxis]
            axes += a
    return x.transpose([axes.index(a) for a in order])


def reference(data: np.ndarray, axes: str, roi: dict, renorm, dtype, order) -> np.ndarray:
    """docs/usage.md: cutout, renormalize (in compute_dtype), convert (rint, clip), transpose."""
    bounds = absolute_roi(roi, axes, data.shape)
    x = data[tuple(slice(*bounds[a]) for a in axes)]
    if renorm is not None:
        (in_range, (out_min, out_max)) = renorm
        if in_range is None:  # the data's min/max inside the ROI (every dtype)
            in_range = (float(np.nanmin(x)), float(np.nanmax(x)))
        in_min, in_max = in_range
        f = compute_dtype(x.dtype).type
        x = (x.astype(f) - f(in_min)) * f(out_max - out_min) / f(in_max - in_min) + f(out_min)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            x = np.clip(np.rint(x), info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
    return to_order(x, axes, order) if order else x


def assert_values(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(actual, expected)


# Renormalize input ranges narrower than the data (so the conversion must clip on both sides),
# with bounds that are exact in float32 so the reference is unambiguous.
IN_NARROW = {"float32": (0.125, 0.875), "uint8": (16, 240), "uint16": (4096, 61440)}

CASES: dict[str, dict[str, Any]] = {
    # negative start, negative stop, None, starts not aligned to the source chunks (8, 16, 16)
    "uint8-xyzc": dict(
        roi={"z": (3, -8), "y": (5, None), "x": (-27, 37)},
        out=(0, 255),
        dtype="uint8",
        order="xyzc",
    ),
    "uint16-czyx": dict(
        roi={"z": (5, None), "x": (13, -2)}, out=(0, 65535), dtype="uint16", order="czyx"
    ),
    # input range None: the data's min/max for float sources, the dtype's range for integers
    "float32-zyxc": dict(
        roi={"z": (-18, -3), "y": (7, 29)},
        in_range=None,
        out=(-1, 1),
        dtype="float32",
        order="zyxc",
    ),
}

# each output format reads from another kind of source file, to cover more readers
SOURCE_FOR_FORMAT = {"hdf5": "zarr3", "zarr": "hdf5", "tiff-sequence": "npy"}

TEMPLATES = {
    "hdf5": "{nickname}_{roi}.h5/exported/data",
    "zarr": "{nickname}_{roi}.zarr",
    "tiff-sequence": "{nickname}_slices/s{slice_index}.tif",
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fmt", ["hdf5", "zarr", "tiff-sequence"])
def test_export_roundtrip(fmt, case, dtype, data, src_dir, out_dir):
    c = CASES[case]
    src = WRITERS[SOURCE_FOR_FORMAT[fmt]](src_dir, data)
    in_range = c["in_range"] if "in_range" in c else IN_NARROW[dtype]
    renorm = (in_range, c["out"])
    settings = ExportSettings(
        roi=c["roi"],
        renormalize=renorm,
        dtype=c["dtype"],
        axis_order=c["order"],
        format=fmt,
        output=f"{out_dir}/{TEMPLATES[fmt]}",
    )
    result = export(src.spec, settings)

    expected = reference(data, "zyx", c["roi"], renorm, c["dtype"], c["order"])
    order = c["order"]
    bounds = absolute_roi(c["roi"], "zyx", SHAPE)
    nickname = src.file.stem
    roi_text = "_".join(f"{a}{bounds[a][0]}-{bounds[a][1]}" for a in order if a in bounds)

    assert result.axes == tuple(order)
    assert result.shape == expected.shape
    assert np.dtype(result.dtype) == expected.dtype
    if in_range is None and dtype == "float32":
        assert any("min/max" in n or "range" in n for n in result.notes), result.notes

    if fmt == "hdf5":
        assert result.output == out_dir / f"{nickname}_{roi_text}.h5"
        with h5py.File(result.output, "r") as f:
            dset = f["exported/data"]
            assert_values(dset[...], expected)
            tags = json.loads(dset.attrs["axistags"])
            assert [a["key"] for a in tags["axes"]] == list(order)
            flags = {a["key"]: a["typeFlags"] for a in tags["axes"]}
            assert flags == {"c": 1, "z": 2, "y": 2, "x": 2}
            np.testing.assert_array_equal(
                dset.attrs["drange"], np.array(c["out"], dtype=expected.dtype)
            )
    elif fmt == "zarr":
        assert result.output == out_dir / f"{nickname}_{roi_text}.zarr"
        arr = as_array(zarr.open(str(result.output), mode="r"))
        assert isinstance(arr, zarr.Array)
        assert tuple(dimension_names(arr)) == tuple(order)
        assert_values(read_all(arr), expected)
    else:
        slice_axis = next(a for a in order if a != "c")
        start, stop = bounds[slice_axis]
        width = len(str(stop - 1))
        folder = out_dir / f"{nickname}_slices"
        names = sorted(os.listdir(folder))
        assert names == [f"s{i:0{width}d}.tif" for i in range(start, stop)]
        assert len(names) == expected.shape[order.index(slice_axis)]
        assert names[0] == f"s{start:0{width}d}.tif"
        for k, name in enumerate(names):
            img = tifffile.imread(folder / name)
            plane = np.take(expected, k, axis=order.index(slice_axis))
            assert img.dtype == plane.dtype
            # the channel axis has length 1: each file is one 2-D plane in output axis order
            assert_values(np.squeeze(img), np.squeeze(plane))
        assert [p.name for p in result.paths] == names

    back = open_exported(result)
    assert tuple(back.dims) == tuple(order)
    assert_values(back.values, expected)
    assert hidden_temps(out_dir) == []


def test_renormalize_alone_keeps_float(out_dir):
    data = make_data("uint8")
    result = export(
        data,
        ExportSettings(renormalize=((0, 255), (0, 1)), format="zarr", output=f"{out_dir}/r.zarr"),
    )
    arr = as_array(zarr.open(str(result.output), mode="r"))
    assert arr.dtype == np.float32
    assert_values(read_all(arr), reference(data, "zyx", {}, ((0, 255), (0, 1)), None, None))


def test_no_conversion_keeps_source_dtype_and_values(h5_source, out_dir):
    result = export(h5_source.spec, ExportSettings(format="zarr", output=f"{out_dir}/same.zarr"))
    arr = as_array(zarr.open(str(result.output), mode="r"))
    assert arr.dtype == h5_source.data.dtype
    np.testing.assert_array_equal(read_all(arr), h5_source.data)
    assert tuple(dimension_names(arr)) == ("z", "y", "x")


@pytest.mark.parametrize("fmt", ["hdf5", "zarr", "tiff-sequence"])
def test_renormalize_beyond_dtype_range_clips(fmt, out_dir):
    """An output range wider than the output dtype is legal: the conversion clips
    (docs/usage.md)."""
    data = make_data("float32")
    renorm = ((0.25, 0.75), (-100, 70000))
    output = {"hdf5": "wide.h5", "zarr": "wide.zarr", "tiff-sequence": "wide/{slice_index}.tif"}[
        fmt
    ]
    result = export(
        data,
        ExportSettings(
            roi={"z": (0, 4)},
            renormalize=renorm,
            dtype="uint16",
            format=fmt,
            output=f"{out_dir}/{output}",
        ),
    )
    expected = reference(data, "zyx", {"z": (0, 4)}, renorm, "uint16", None)
    assert expected.min() == 0 and expected.max() == 65535  # both sides really clip
    assert_values(open_exported(result).values, expected)
    if fmt == "hdf5":
        with h5py.File(result.output, "r") as f:
            # the output's value range is what the uint16 data can hold
            np.testing.assert_array_equal(f["exported_data"].attrs["drange"], [0, 65535])


def test_zarr_v2_output_has_array_dimensions(out_dir):
    data = make_data("uint16")
    result = export(
        data,
        ExportSettings(axis_order="xyz", format="zarr", zarr_format=2, output=f"{out_dir}/v2.zarr"),
    )
    arr = as_array(zarr.open(str(result.output), mode="r"))
    assert arr.metadata.zarr_format == 2
    assert arr.attrs["_ARRAY_DIMENSIONS"] == ["x", "y", "z"]
    np.testing.assert_array_equal(arr[...], data.transpose(2, 1, 0))
    assert tuple(open_exported(result).dims) == ("x", "y", "z")


# ---------------------------------------------------------------------------------------------
# sources


def test_open_source_file_kinds(file_source):
    arr = open_source(file_source.spec)
    assert isinstance(arr, xr.DataArray)
    assert isinstance(arr.data, da.Array)
    assert tuple(arr.dims) == tuple(file_source.axes)
    assert arr.shape == file_source.data.shape
    assert arr.dtype == file_source.data.dtype
    np.testing.assert_array_equal(arr.values, file_source.data)
    # a cutout reads the right values too
    np.testing.assert_array_equal(
        arr.isel(z=slice(3, 11), x=slice(-9, None)).values, file_source.data[3:11, :, -9:]
    )
    assert arr.attrs["nickname"] == file_source.file.stem
    assert arr.attrs["dataset_dir"] == str(file_source.file.resolve().parent)


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_describe_file_kinds(kind, src_dir):
    data = make_data("uint16")
    src = WRITERS[kind](src_dir, data)
    d = describe(src.spec)
    assert d.shape == SHAPE
    assert d.dtype == np.uint16
    assert d.axes == tuple(src.axes)
    assert d.nbytes == data.nbytes
    assert len(d.chunks) == 3 and all(1 <= c <= s for c, s in zip(d.chunks, SHAPE))
    text = str(d)
    assert "uint16" in text and "zyx" in text and str(data.nbytes) in text


def test_hdf5_single_dataset_needs_no_internal_path(src_dir):
    data = make_data("uint8")
    src = write_hdf5(src_dir / "one.h5", data, dataset="only")
    arr = open_source(str(src.file))
    assert tuple(arr.dims) == ("z", "y", "x")
    np.testing.assert_array_equal(arr.values, data)


@pytest.mark.parametrize(
    "writer", [write_hdf5, write_zarr3, write_zarr2], ids=["hdf5", "zarr3", "zarr2"]
)
def test_file_axis_metadata_beats_the_guess(writer, src_dir):
    """Axis tags stored in the file are used (a guess by rank would say zyx)."""
    data = make_data("uint8").transpose(2, 0, 1).copy()  # x z y
    suffix = ".h5" if writer is write_hdf5 else ".zarr"
    src = writer(src_dir / f"xzy{suffix}", data, axes="xzy")
    arr = open_source(src.spec)
    assert tuple(arr.dims) == ("x", "z", "y")
    np.testing.assert_array_equal(arr.values, data)
    # an explicit axes= overrides the file's tags
    assert tuple(open_source(src.spec, axes="abc").dims) == ("a", "b", "c")


def test_npy_axes_override(src_dir):
    data = make_data("float32", shape=(6, 7, 3))
    path = src_dir / "small.npy"
    np.save(path, data)
    assert tuple(open_source(str(path)).dims) == ("y", "x", "c")  # guess: small last axis
    arr = open_source(str(path), axes="ZYX")
    assert tuple(arr.dims) == ("z", "y", "x")
    np.testing.assert_array_equal(arr.values, data)


@pytest.mark.parametrize("kind", ["numpy", "dask", "xarray"])
def test_open_source_in_memory(kind, dtype):
    data = make_data(dtype)
    obj: np.ndarray | da.Array | xr.DataArray
    if kind == "numpy":
        obj, axes = data, ("z", "y", "x")
    elif kind == "dask":
        obj, axes = da.from_array(data, chunks=(7, 11, 13)), ("z", "y", "x")
    else:
        obj, axes = xr.DataArray(data.transpose(2, 1, 0), dims=("x", "y", "z")), ("x", "y", "z")
    arr = open_source(obj)
    assert tuple(arr.dims) == axes
    assert isinstance(arr.data, da.Array)
    assert arr.dtype == data.dtype
    expected = data.transpose(2, 1, 0) if kind == "xarray" else data
    assert arr.shape == expected.shape
    np.testing.assert_array_equal(arr.values, expected)
    d = describe(obj)
    assert d.shape == expected.shape and d.axes == axes and d.dtype == data.dtype
    # axes= labels in-memory data too
    assert tuple(open_source(obj, axes="tyx").dims) == ("t", "y", "x")


@pytest.mark.parametrize("fmt", ["hdf5", "zarr", "tiff-sequence"])
def test_open_exported_gives_output_axis_order(fmt, out_dir):
    data = make_data("uint8")
    output = {"hdf5": "o.h5", "zarr": "o.zarr", "tiff-sequence": "o/{slice_index}.tif"}[fmt]
    result = export(
        xr.DataArray(data, dims=("z", "y", "x")),
        ExportSettings(
            roi={"z": (2, 6)}, axis_order="czyx", format=fmt, output=f"{out_dir}/{output}"
        ),
    )
    back = open_exported(result)
    assert tuple(back.dims) == ("c", "z", "y", "x")
    assert back.shape == (1, 4, 30, 40)
    np.testing.assert_array_equal(back.values[0], data[2:6])


@pytest.mark.parametrize(
    "compression,level",
    [("gzip", None), ("gzip", 6), ("lzf", None), ("zstd", None), ("blosc", None), ("none", None)],
)
def test_hdf5_chunks_and_compression_roundtrip(compression, level, h5_source, out_dir, monkeypatch):
    """Output chunks that do not divide the shape (edge chunks), several blocks per export."""
    plan_module = importlib.import_module("lazyexport.plan")

    monkeypatch.setattr(plan_module, "MAX_BLOCK_BYTES", 3 * 7 * 16 * 8 * 4)
    roi = {"z": (1, -2), "y": (3, None), "x": (-33, -1)}
    settings = ExportSettings(
        roi=roi,
        axis_order="zyx",
        format="hdf5",
        compression=compression,
        compression_level=level,
        chunks={"z": 3, "y": 7, "x": 16},
        output=f"{out_dir}/c.h5",
    )
    result = export(h5_source.spec, settings)
    expected = h5_source.data[1:-2, 3:, -33:-1]
    with h5py.File(result.output, "r") as f:
        dset = f["exported_data"]
        assert dset.chunks == (3, 7, 16)
        plugin = {"zstd": "32015", "blosc": "32001"}.get(compression)
        if plugin:
            assert plugin in dset._filters  # the registered HDF5 filter plugin
        else:
            assert dset.compression == (None if compression == "none" else compression)
        if compression == "gzip":  # a plain zlib stream, as every HDF5 reader expects
            assert dset.compression_opts == (level or 1)
            _, raw = dset.id.read_direct_chunk((3, 7, 16))
            np.testing.assert_array_equal(
                np.frombuffer(zlib.decompress(raw), dtype=dset.dtype).reshape(3, 7, 16),
                expected[3:6, 7:14, 16:32],
            )
        np.testing.assert_array_equal(dset[...], expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_chunks_roundtrip(zarr_format, zarr3_source, out_dir, monkeypatch):
    plan_module = importlib.import_module("lazyexport.plan")

    monkeypatch.setattr(plan_module, "MAX_BLOCK_BYTES", 4 * 9 * 11 * 8 * 4)
    settings = ExportSettings(
        roi={"z": (2, None), "x": (5, -5)},
        axis_order="yxz",
        format="zarr",
        zarr_format=zarr_format,
        chunks={"z": 4, "y": 9, "x": 11},
        output=f"{out_dir}/c.zarr",
    )
    result = export(zarr3_source.spec, settings)
    arr = as_array(zarr.open(str(result.output), mode="r"))
    assert arr.chunks == (9, 11, 4)
    np.testing.assert_array_equal(arr[...], zarr3_source.data[2:, :, 5:-5].transpose(1, 2, 0))


@pytest.mark.parametrize(
    "depth,limit,staged", [(1, "16MiB", False), (4, "16MiB", False), (32, "16MiB", True)]
)
def test_sequences_stage_only_slabs_that_do_not_fit(tmp_path, depth, limit, staged):
    """Source chunks deeper than one slice: when the slab of slices one chunk spans fits the
    budget, slices are written straight from it; else blocks follow the chunks and slices are
    assembled in a staging file, which is gone afterwards. Both equal the source's slices."""
    from lazyexport.plan import build_plan

    data = (np.arange(40 * 512 * 512) % 200).astype("uint16").reshape(40, 512, 512)
    source = xr.DataArray(da.from_array(data, chunks=(depth, 64, 512)), dims=("z", "y", "x"))
    settings = ExportSettings(
        roi={"z": (1, 39)},
        format="tiff-sequence",
        output=str(tmp_path / "s" / "z{slice_index}.tif"),
    )
    plan = build_plan(source, settings, memory_limit=limit)
    assert plan.costs is not None
    assert plan.staged == staged and plan.costs.amplification == 1.0
    result = export(source, settings, memory_limit=limit)
    assert not [p for p in tmp_path.rglob("*") if ".lazyexport-" in p.name]
    assert all(np.array_equal(tifffile.imread(p), data[1 + i]) for i, p in enumerate(result.paths))
