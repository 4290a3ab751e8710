"""The smoothing step's review fixes (issue 28): a big-endian float64 source (N5, HDF5) is
smoothed in float64; a float16 source is smoothed (read as float32, float32 output); mistakes in
``--smooth`` (an axis that is not one letter, an axis twice, a sigma too small for scipy's
kernel or too large to allocate) are one ``error:`` line with exit status 2; a sigma given as a
length keeps its digits."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr
from scipy.ndimage import gaussian_filter

import lazyexport as le


def _written(path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(path), mode="r")[...])


def _whole(data: np.ndarray, sigma: list[float]) -> np.ndarray:
    return gaussian_filter(data.astype(np.float64), sigma, truncate=4.0)


@pytest.mark.parametrize("how", ["array", "hdf5"])
def test_big_endian_float64_is_smoothed_in_float64(tmp_path, how):
    data = (np.random.default_rng(0).random((3, 20, 30)) + 1e6).astype(">f8")
    source: object = data
    if how == "hdf5":
        with h5py.File(tmp_path / "s.h5", "w") as f:
            f.create_dataset("d", data=data, chunks=(1, 8, 8))
        source = str(tmp_path / "s.h5" / "d")
    out = tmp_path / "o.zarr"
    le.export(
        le.open_source(source, axes="zyx"),
        le.ExportSettings(format="zarr", output=str(out), smooth={"y": 2}),
    )
    got = _written(out)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _whole(data, [0, 2, 0]), rtol=1e-13)
