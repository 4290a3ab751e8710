"""Source pixel types (issue 13 item 12): 64-bit integer TIFFs and in-memory arrays of an aliased
dtype export to Zarr. Each test failed before its fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le

pytestmark = pytest.mark.usefixtures("small_blocks")


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
@pytest.mark.parametrize("fmt", ["zarr", "ome-zarr"])
def test_item12_64_bit_integer_tiff_exports_to_zarr(tmp_path, dtype, fmt):
    info = np.iinfo(dtype)
    data = np.arange(2 * 8 * 8, dtype=dtype).reshape(2, 8, 8) * (info.max // 200)
    data[0, 0, :2] = info.min, info.max  # beyond float64's exact integers
    tifffile.imwrite(tmp_path / "big.tif", data)
    src = le.open_source(str(tmp_path / "big.tif"))
    assert src.dtype.type is np.dtype(dtype).type
    # (zarr has no levels: refused)
    levels: dict[str, Any] = {"levels": 1} if fmt == "ome-zarr" else {}
    result = le.export(
        src, le.ExportSettings(format=fmt, output=str(tmp_path / "out.zarr"), **levels)
    )
    back = le.open_exported(result)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.values, data)


def test_item12_an_in_memory_array_of_an_aliased_dtype_exports_to_zarr(tmp_path):
    data = np.arange(24, dtype=np.ulonglong).reshape(2, 3, 4)  # equal to uint64, another type
    assert le.open_source(data).dtype.type is np.dtype("uint64").type
    result = le.export(data, le.ExportSettings(format="zarr", output=str(tmp_path / "m.zarr")))
    np.testing.assert_array_equal(zarr.open_array(str(result.output), mode="r")[...], data)
