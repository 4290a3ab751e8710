"""The smoothing step's review fixes (issue 28): a big-endian float64 source (N5, HDF5) is
smoothed in float64; a float16 source is smoothed (read as float32, float32 output); mistakes in
``--smooth`` (an axis that is not one letter, an axis twice, a sigma too small for scipy's
kernel or too large to allocate) are one ``error:`` line with exit status 2; a sigma given as a
length keeps its digits."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import zarr
from scipy.ndimage import gaussian_filter

import lazyexport as le
from helpers import run_cli, write_zarr3
from lazyexport.errors import SettingsError
from lazyexport.plan import build_plan
from lazyexport.step_smooth import HalfSmooth, Smooth


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


@pytest.mark.parametrize("path", ["blocks", "lazy"])
def test_float16_is_smoothed_as_float32(tmp_path, path):
    data = np.random.default_rng(1).random((6, 40, 30)).astype(np.float16)
    roi = {"z": (1, 6), "y": (3, 37)}
    settings = le.ExportSettings(roi=roi, smooth={"z": 1, "y": 2, "x": 1.5})
    expected = _whole(data, [1, 2, 1.5])[1:6, 3:37]
    if path == "lazy":
        got = np.asarray(build_plan(le.open_source(data, axes="zyx"), settings).result.values)
    else:
        out = tmp_path / "o.zarr"
        chunks = {"z": 2, "y": 8, "x": 8}
        written = dataclasses.replace(settings, format="zarr", output=str(out), chunks=chunks)
        le.export(le.open_source(data, axes="zyx"), written)
        got = _written(out)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_float16_block_work_counts_the_float32_copy():
    shape = (4, 30, 20)
    half, single = HalfSmooth("zyx", {"y": 2}), Smooth("zyx", {"y": 2})
    copy = 4 * 30 * 20 * 4
    assert half.work(shape, np.dtype(np.float16)) == single.work(shape, np.dtype("f4")) + copy
    assert half.dtype(np.dtype(np.float16)) == np.float32


@pytest.mark.parametrize(
    ("smooth", "says"),
    [
        ("yx=2", "smooth gives a sigma to 'yx': name one axis per sigma"),
        ("=2", "smooth gives a sigma to '': name one axis per sigma"),
        ("y=2,y=3", "smooth names axis 'y' twice"),
        ("y=2,Y=3", "smooth names axis 'y' twice"),
        ("y=1e-300", "smooth sigma for axis 'y' is 1e-300 pixels: it must be at least 0.01"),
        ("y=1e30", "its kernel (4 sigma each side) must reach at most 1000000 pixels"),
    ],
)
def test_smooth_mistake_is_one_error_line_exit_2(tmp_path, smooth, says):
    src = write_zarr3(tmp_path / "s.zarr", np.zeros((4, 20, 30), np.uint16), chunks=(4, 8, 8))
    out = tmp_path / "o.zarr"
    done = run_cli("export", src.spec, "--smooth", smooth, "--format", "zarr", "--output", out)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert says in lines[0] and "export failed" not in lines[0], lines[0]
    assert not out.exists()


def test_an_axis_twice_in_a_mapping_is_refused():
    with pytest.raises(SettingsError, match="smooth names axis 'y' twice"):
        le.ExportSettings(smooth={"y": 2, "Y": 3})


def test_the_sigma_bounds_are_inclusive():
    assert le.ExportSettings(smooth={"y": 0.01, "x": 250000}).smooth == {"y": 0.01, "x": 250000}
    with pytest.raises(SettingsError, match="at least 0.01 pixel"):
        le.ExportSettings(smooth={"y": 0.0099})


def test_a_length_too_small_in_pixels_is_refused_when_the_pixel_size_is_known():
    arr = le.open_source(np.zeros((4, 20, 30), np.float32), axes="zyx")
    settings = le.ExportSettings(smooth={"x": "1nm"}, pixel_size={"x": 1.0}, unit="um")
    with pytest.raises(SettingsError, match="is 1 nanometer = 0.001 pixels: it must be at least"):
        build_plan(arr, settings)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("1.2345678um", "1.2345678 micrometer"), ("2um", "2 micrometer"), ("0.1nm", "0.1 nanometer")],
)
def test_a_sigma_given_as_a_length_keeps_its_digits(given, kept):
    assert le.ExportSettings(smooth={"y": given}).smooth == {"y": kept}
