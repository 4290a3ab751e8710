"""Pyramid levels (issue 13 item 19): uint16 intensities are averaged, int64 extremes average
without wrapping, and labels take the most frequent value. Each test failed before its fix.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import lazyexport as le
from helpers.zarr_nodes import read_all


def _pyramid(tmp_path, data, name, **kw):
    source = xr.DataArray(da.from_array(data, chunks=(4, 32, 32)), dims=("z", "y", "x"))
    settings = le.ExportSettings(format="ome-zarr", output=str(tmp_path / name), levels=2, **kw)
    result = le.export(source, settings)
    group = zarr.open_group(str(result.output), mode="r")
    return result, read_all(group["0"]), read_all(group["1"])


def test_item19_intensity_pyramid_of_uint16_is_averaged(tmp_path):
    data = np.random.default_rng(19).integers(0, 65536, (8, 64, 64), dtype=np.uint16)
    result, level0, level1 = _pyramid(tmp_path, data, "raw.ome.zarr")
    np.testing.assert_array_equal(level0, data)
    assert level1.dtype == np.uint16
    assert abs(level1.mean() - level0.mean()) < 0.01 * level0.mean()
    windows = data.reshape(4, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    np.testing.assert_array_equal(level1, np.rint(windows).astype(np.uint16))
    assert any("mode" in note for note in result.notes)  # says how to get labels' downsampling


def test_item19_int64_extremes_average_without_wrapping(tmp_path):
    data = np.full((2, 4, 4), np.iinfo(np.int64).max, dtype=np.int64)
    _, _, level1 = _pyramid(tmp_path, data, "big.ome.zarr")
    np.testing.assert_array_equal(level1, np.iinfo(np.int64).max)


@pytest.mark.parametrize(
    "how",
    [{"downsample": "mode"}, {"result_type": "Simple Segmentation"}, {"result_type": "Labels"}],
)
def test_item19_labels_take_the_most_frequent_value(tmp_path, how):
    rng = np.random.default_rng(19)
    data = rng.choice(np.array([1, 7, 200], dtype=np.uint16), size=(8, 64, 64), p=[0.6, 0.3, 0.1])
    _, level0, level1 = _pyramid(tmp_path, data, "labels.ome.zarr", **how)
    np.testing.assert_array_equal(level0, data)
    assert set(np.unique(level1)) <= {1, 7, 200}
    windows = data.reshape(4, 2, 32, 2, 32, 2).transpose(0, 2, 4, 1, 3, 5).reshape(4, 32, 32, 8)
    counts = np.stack([(windows == v).sum(axis=-1) for v in (1, 7, 200)], axis=-1)
    np.testing.assert_array_equal(
        level1, np.array([1, 7, 200], dtype=np.uint16)[counts.argmax(axis=-1)]
    )
