"""Renormalizing near the float32 limits (issue 13 item 15): values near float32's maximum stay
finite, results that do not fit float32 are still infinite and NaN stays NaN, and ordinary values
are bit-identical to the float32 formula. Each test failed before its fix.
"""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

import lazyexport as le
from helpers.zarr_nodes import read_all
from lazyexport.transforms import renormalize

F32_MAX = float(np.finfo(np.float32).max)


def _renorm(x, in_range, out_range, dtype=None):
    arr = xr.DataArray(da.from_array(x, chunks=2), dims=("x",))
    # in this thread, so that the error state applies: no overflow warnings either
    with dask.config.set(scheduler="synchronous"), np.errstate(all="raise"):
        return renormalize(arr, in_range, out_range, dtype=dtype).values


def test_item15_renormalize_values_near_float32_max(tmp_path):
    x = np.array([0, 1e38, 2e38, F32_MAX, -F32_MAX], dtype=np.float32)
    np.testing.assert_array_equal(_renorm(x, (0, F32_MAX), (0, 255), "uint8"), [0, 75, 150, 255, 0])
    out = _renorm(x, (-F32_MAX, F32_MAX), (0, 1))  # x - in_min alone overflows float32
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(
        out, [0.5, 0.5 + 1e38 / F32_MAX / 2, 0.5 + 2e38 / F32_MAX / 2, 1.0, 0.0], rtol=1e-6
    )
    # through an export: the values reach the file
    settings = le.ExportSettings(
        renormalize=((0, F32_MAX), (0, 255)),
        dtype="uint8",
        format="zarr",
        output=str(tmp_path / "r.zarr"),
    )
    result = le.export(x.reshape(1, 1, 5), settings)
    np.testing.assert_array_equal(
        read_all(zarr.open_array(str(result.output), mode="r")).ravel(), [0, 75, 150, 255, 0]
    )


def test_item15_results_that_do_not_fit_float32_are_still_infinite_and_nan_stays_nan():
    x = np.array([F32_MAX, -F32_MAX, np.inf, np.nan, 1.0], dtype=np.float32)
    with np.errstate(all="ignore"):
        out = renormalize(
            xr.DataArray(da.from_array(x, chunks=2), dims=("x",)), (0, 1), (0, 10)
        ).values
    assert out[0] == np.inf and out[1] == -np.inf and out[2] == np.inf and math.isnan(out[3])
    assert out[4] == np.float32(10)


def test_item15_ordinary_values_are_bit_identical_to_the_float32_formula():
    rng = np.random.default_rng(15)
    x = (rng.random(1000, dtype=np.float32) - 0.3) * np.float32(1e4)
    f = np.float32
    expected = (x - f(-3.5)) * f(255 - 2) / f(1e4 + 3.5) + f(2)
    np.testing.assert_array_equal(_renorm(x, (-3.5, 1e4), (2, 255)), expected)
