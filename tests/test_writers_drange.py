"""The ``drange`` the writers store (issue 13 item 7): the exact dtype range of 64-bit integer
results, an ordered range inside the dtype for renormalized results, and the output dtype's for
float results. Each test failed before its fix.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers.zarr_nodes import zarr_attrs
from lazyexport.plan import build_plan

DRANGE_FORMATS = {"hdf5": "out.h5", "zarr": "out.zarr", "n5": "out.n5", "ome-zarr": "out.ome.zarr"}


def read_drange(fmt: str, result) -> list:
    """The ``drange`` attribute as the format stores it (HDF5: a numpy array, else JSON)."""
    if fmt == "hdf5":
        with h5py.File(result.output, "r") as f:
            value = f[result.internal or "exported_data"].attrs["drange"]
            assert value.dtype == result.dtype
            return value.tolist()
    if fmt == "zarr":
        return zarr_attrs(zarr.open_array(str(result.output), mode="r"))["drange"]
    if fmt == "n5":
        return json.loads((result.output / "attributes.json").read_text())["drange"]
    return zarr_attrs(zarr.open_group(str(result.output), mode="r"))["drange"]


@pytest.mark.parametrize("fmt", list(DRANGE_FORMATS))
@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_item07_drange_of_64_bit_integer_results_is_the_exact_dtype_range(tmp_path, fmt, dtype):
    info = np.iinfo(dtype)
    data = np.array([info.min, info.max, 0, 1, info.max - 1, 7], dtype=dtype).reshape(
        1, 1, 6
    )  # zyx
    levels: dict[str, Any] = {"levels": 1} if fmt == "ome-zarr" else {}
    output = str(tmp_path / DRANGE_FORMATS[fmt])
    result = le.export(data, le.ExportSettings(format=fmt, output=output, **levels))
    drange = read_drange(fmt, result)
    assert drange == [int(info.min), int(info.max)]  # 2**64 - 1 exactly, not 2**64
    assert all(type(v) is int for v in drange)
    np.testing.assert_array_equal(le.open_exported(result).values, data)


@pytest.mark.parametrize("fmt", list(DRANGE_FORMATS))
@pytest.mark.parametrize(
    "out_range, dtype, expected",
    [
        ((300, 400), "uint8", [255, 255]),  # wholly above uint8: every value clips to 255
        ((400, -50), "uint8", [0, 255]),  # reversed and wider than uint8
        ((-10.5, 2.5), "int8", [-10, 2]),  # rounded half to even, as the values are
        ((0, 2.0**64), "uint64", [0, 2**64 - 1]),
        ((-(2.0**70), 0), "int64", [-(2**63), 0]),
    ],
)
def test_item07_drange_of_renormalized_results_is_ordered_and_in_the_dtype(
    tmp_path, fmt, out_range, dtype, expected
):
    data = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    levels: dict[str, Any] = {"levels": 1} if fmt == "ome-zarr" else {}
    settings = le.ExportSettings(
        format=fmt,
        output=str(tmp_path / DRANGE_FORMATS[fmt]),
        dtype=dtype,
        renormalize=((0, 1), out_range),
        **levels,
    )
    value_range = build_plan(data, settings).value_range
    assert value_range is not None
    assert list(value_range) == expected
    result = le.export(data, settings)
    drange = read_drange(fmt, result)
    assert drange == expected
    assert drange[0] <= drange[1]
    assert all(type(v) is int for v in drange)


def test_item07_drange_of_float_results_is_in_the_output_dtype(tmp_path):
    data = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    plan = build_plan(
        data,
        le.ExportSettings(
            renormalize=((0, 1), (0.1, -1e300)), dtype="float32", output=str(tmp_path / "f.h5")
        ),
    )
    assert plan.value_range is not None
    lo, hi = plan.value_range
    assert (lo, hi) == (float(np.finfo(np.float32).min), float(np.float32(0.1)))
    result = le.export(data, plan.settings)
    assert read_drange("hdf5", result) == [lo, hi]
