"""Slice sequences (issue 13 item 11): 1-D slices are refused when planning and on the command
line, while one slice of a 2-D image with an added axis still works. Each test failed before its
fix.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import xarray as xr

import lazyexport as le
from lazyexport.cli import main
from lazyexport.errors import FormatError


def _never_computed(shape, dims, dtype=np.uint8):
    def fail(block):
        raise AssertionError("computed a block before refusing")

    data = da.zeros(shape, dtype=dtype, chunks=shape).map_blocks(fail, dtype=dtype)
    return xr.DataArray(data, dims=dims)


@pytest.mark.parametrize("fmt", ["tiff-sequence", "png-sequence"])
@pytest.mark.parametrize("shape, dims", [((4, 6), "yx"), ((5, 7), "zx"), ((4, 6, 3), "yxc")])
def test_item11_sequences_refuse_1d_slices_at_planning(tmp_path, fmt, shape, dims):
    source = _never_computed(shape, tuple(dims))
    with pytest.raises(FormatError, match="2-D") as info:
        le.export(
            source, le.ExportSettings(format=fmt, output=str(tmp_path / "out" / "s_{slice_index}"))
        )
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_item11_sequences_refuse_1d_slices_cli(tmp_path, capsys):
    np.save(tmp_path / "image.npy", np.zeros((4, 6), dtype=np.uint8))
    for fmt in ("tiff-sequence", "png-sequence"):
        code = main(
            [
                "export",
                str(tmp_path / "image.npy"),
                "--format",
                fmt,
                "--output",
                str(tmp_path / "out" / "s_{slice_index}"),
                "--quiet",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1 and "2-D" in err
    assert not (tmp_path / "out").exists()


def test_item11_one_slice_of_a_2d_image_with_an_added_axis_still_works(tmp_path):
    image = np.arange(24, dtype=np.uint8).reshape(4, 6)
    result = le.export(
        xr.DataArray(image, dims=("y", "x")),
        le.ExportSettings(
            format="tiff-sequence", axis_order="zyx", output=str(tmp_path / "s_{slice_index}")
        ),
    )
    assert len(result.paths) == 1
    np.testing.assert_array_equal(tifffile.imread(result.paths[0]), image)
