"""Glob sources (issue 13 item 13, review finding 8): slices that do not match the first are
refused naming the file, on the command line with exit status 2; at a URL, a key holding glob
characters opens by its suffix, and a glob that names no object is refused in one line. Each test
failed before its fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import lazyexport as le
from lazyexport.cli import main
from lazyexport.errors import SourceError

pytestmark = pytest.mark.usefixtures("small_blocks")


def _slices(folder: Path, odd: np.ndarray | None = None, at: int = 2) -> str:
    folder.mkdir()
    for i in range(4):
        slice_ = odd if odd is not None and i == at else np.full((6, 5), i, np.uint8)
        tifffile.imwrite(folder / f"s_{i}.tif", slice_)
    return str(folder / "s_*.tif")


@pytest.mark.parametrize(
    "odd, what",
    [
        (np.full((7, 5), 9, np.uint8), r"\(7, 5\)"),
        (np.full((6, 5), 300, np.uint16), "uint16"),
        (np.full((6, 5, 3), 9, np.uint8), r"\(6, 5, 3\)"),
    ],
    ids=["larger", "dtype", "rgb"],
)
def test_item13_mismatched_slices_are_refused_naming_the_file(tmp_path, odd, what):
    pattern = _slices(tmp_path / "slices", odd)
    with pytest.raises(SourceError, match=f"s_2.tif.*{what}") as err:
        le.open_source(pattern)
    assert "\n" not in str(err.value)


def test_item13_cli_info_refuses_a_mismatched_glob_with_exit_2(tmp_path, capsys):
    pattern = _slices(tmp_path / "slices", np.full((6, 5), 300, np.uint16), at=3)
    assert main(["info", pattern]) == 2
    err = capsys.readouterr().err
    assert "s_3.tif" in err and "uint16" in err and len(err.strip().splitlines()) == 1


def test_item13_matching_slices_still_open(tmp_path):
    src = le.open_source(_slices(tmp_path / "slices"))
    assert src.shape == (4, 6, 5)
    np.testing.assert_array_equal(src.values[:, 0, 0], [0, 1, 2, 3])


def test_item13_mismatched_png_slices_are_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "png"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 5), i, np.uint8)).save(folder / f"p_{i}.png")
    Image.fromarray(np.full((6, 5, 3), 1, np.uint8)).save(folder / "p_1.png")
    with pytest.raises(SourceError, match=r"p_1.png.*\(6, 5, 3\)"):
        le.open_source(str(folder / "p_*.png"))


@pytest.fixture(scope="module")
def s3_keys():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.objstore import s3_bucket

    with s3_bucket("lzg") as server:
        yield server


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("scan[1].zarr", "zarr"),
        ("a[1]/v.zarr", "zarr"),
        ("scan[1].h5", "hdf5"),
        ("s*1.zarr", "zarr"),
    ],
)
def test_finding8_a_url_whose_key_holds_glob_characters_opens_by_its_suffix(s3_keys, name, fmt):
    data = np.arange(4 * 8 * 8, dtype="uint16").reshape(4, 8, 8)
    url = f"s3://lzg/{name}"
    le.export(data, le.ExportSettings(format=fmt, output=url))
    np.testing.assert_array_equal(le.open_source(url).values, data)


def test_finding8_a_glob_at_a_url_that_names_no_object_is_still_refused_in_one_line(s3_keys):
    with pytest.raises(SourceError, match="read from local files only") as info:
        le.open_source("s3://lzg/slices/z_*.tif")
    assert "\n" not in str(info.value) and "slices" in str(info.value)
