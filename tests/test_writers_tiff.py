"""TIFF outputs (issue 13 items 10 and 18): length-1 axes at the end of the source are written and
read back in every flavor and compression, a small compressed TIFF is a classic TIFF, and
BigTIFF is used only when needed and the plan says so. Each test failed before its fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tifffile
import xarray as xr

import lazyexport as le
from lazyexport.formats import tiff as tiff_format
from lazyexport.plan import build_plan

SOURCE_10 = np.random.default_rng(10).integers(0, 255, (4, 6, 8), dtype=np.uint8)


CASES_10: dict[
    str, tuple[dict[str, Any], str, np.ndarray]
] = {  # settings -> the result in numpy, in output axes
    "x=5:6": ({"roi": {"x": (5, 6)}}, "zyx", SOURCE_10[:, :, 5:6]),
    "y=2:3,x=5:6": ({"roi": {"y": (2, 3), "x": (5, 6)}}, "zyx", SOURCE_10[:, 2:3, 5:6]),
    "order=zyxt": ({"axis_order": "zyxt"}, "zyxt", SOURCE_10[..., None]),
    "order=zyxc": ({"axis_order": "zyxc"}, "zyxc", SOURCE_10[..., None]),
}


def as_read(expected: np.ndarray, axes: str, read_axes: str) -> np.ndarray:
    """``expected`` (in ``axes``) as a reader reporting ``read_axes`` sees it: length-1 axes it
    does not report left out, the rest in its order."""
    letters = read_axes.lower()
    assert set(letters) <= set(axes), (axes, read_axes)
    dropped = [i for i, a in enumerate(axes) if a not in letters]
    assert all(expected.shape[i] == 1 for i in dropped), (axes, read_axes, expected.shape)
    kept = [a for a in axes if a in letters]
    squeezed = expected.reshape([n for i, n in enumerate(expected.shape) if i not in dropped])
    return squeezed.transpose([kept.index(a) for a in letters])


@pytest.mark.parametrize("case", list(CASES_10))
@pytest.mark.parametrize("compression", ["none", "zlib", "lzma"])
@pytest.mark.parametrize("flavor", ["plain", "imagej", "ome"])
def test_item10_tiff_with_trailing_length_1_axes(tmp_path, flavor, compression, case):
    extra, axes, expected = CASES_10[case]
    source = xr.DataArray(SOURCE_10, dims=("z", "y", "x"))
    result = le.export(
        source,
        le.ExportSettings(
            format="tiff",
            tiff_flavor=flavor,
            compression=compression,
            output=str(tmp_path / "out.tif"),
            **extra,
        ),
    )
    if flavor != "plain":  # the result's axes are the file's: ImageJ's TZCYX, OME's planes y by x
        stored = [a for a in ("tzc" if flavor == "imagej" else axes) if a in axes and a not in "yx"]
        stored += ["y", "x"]
        expected = expected.transpose([axes.index(a) for a in stored])
        axes = "".join(stored)
    assert result.axes == tuple(axes) and result.shape == expected.shape
    with tifffile.TiffFile(result.output) as tif:
        series = tif.series[0]
        read = series.asarray()
        assert tif.is_imagej == (flavor == "imagej")
        if flavor != "plain":  # ImageJ and OME planes are y by x
            assert series.axes.endswith("YX")
            assert tif.pages.first.shape == tuple(expected.shape[axes.index(a)] for a in "yx")
        want = as_read(expected, axes, series.axes)
        assert read.shape == want.shape
        np.testing.assert_array_equal(read, want)
    back = le.open_exported(result)
    assert back.dims == tuple(axes)
    np.testing.assert_array_equal(back.values, expected)


@pytest.mark.parametrize("compression", ["zlib", "lzma"])
@pytest.mark.parametrize("flavor", ["imagej", "plain", "ome"])
def test_item18_small_compressed_tiff_is_classic_tiff(tmp_path, flavor, compression):
    data = np.random.default_rng(18).integers(0, 60000, (5, 2, 20, 30), dtype=np.uint16)
    source = xr.DataArray(data, dims=("z", "c", "y", "x"))
    settings = le.ExportSettings(
        format="tiff",
        tiff_flavor=flavor,
        compression=compression,
        output=str(tmp_path / "small.tif"),
    )
    plan = build_plan(source, settings)
    assert not any("BigTIFF" in note for note in plan.notes)
    result = le.export(source, settings)
    with tifffile.TiffFile(result.output) as tif:
        assert not tif.is_bigtiff
        assert tif.is_imagej == (flavor == "imagej")
        assert tif.pages.first.compression != tifffile.COMPRESSION.NONE
        series = tif.series[0]
        np.testing.assert_array_equal(series.asarray(), as_read(data, "zcyx", series.axes))
    np.testing.assert_array_equal(le.open_exported(result).values, data)


def test_item18_bigtiff_only_when_needed_and_the_plan_says_so(tmp_path, monkeypatch):
    data = np.random.default_rng(18).integers(0, 255, (6, 40, 50), dtype=np.uint8)
    monkeypatch.setattr(tiff_format, "CLASSIC_LIMIT", data.nbytes)  # as if 4 GiB were this small
    settings = le.ExportSettings(
        format="tiff", tiff_flavor="imagej", compression="zlib", output=str(tmp_path / "big.tif")
    )
    plan = build_plan(data, settings)
    assert any("BigTIFF" in note and "ImageJ" in note for note in plan.notes)
    result = le.export(data, settings)
    assert any("BigTIFF" in note for note in result.notes)
    with tifffile.TiffFile(result.output) as tif:
        assert tif.is_bigtiff
        np.testing.assert_array_equal(tif.series[0].asarray(), data)
