"""TIFF outputs hold what their flavor can: OME-TIFF's pixel types are checked when planning
(issue #26 item 12), and the axis order stored is the one asked where the flavor allows it, or
the plan says which, and the result's axes are the file's (item 16)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import lazyexport as le
from conftest import run_cli


@pytest.mark.parametrize("dtype", ["uint64", "int64", "float16"])
def test_ome_tiff_refuses_the_pixel_types_ome_xml_has_not_when_planning(tmp_path, dtype):
    """Before: ``--plan`` passed, and the export failed after computing with tifffile's
    OmeXmlError (exit 1)."""
    np.save(tmp_path / "v.npy", np.zeros((2, 6, 7), dtype))
    before = sorted(tmp_path.iterdir())
    for extra in (["--plan"], []):
        run = run_cli(
            "export", "v.npy", "--format", "tiff", "--tiff-flavor", "ome", "--output", "o.tif",
            *extra, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: OME-TIFF holds "), run.stderr
        assert f"not {dtype}" in lines[0]
    assert sorted(tmp_path.iterdir()) == before
    with pytest.raises(le.ExportError, match="OME-TIFF holds"):
        le.plan(np.zeros((2, 6, 7), dtype), le.ExportSettings(format="tiff", tiff_flavor="ome"))


@pytest.mark.parametrize(
    "dtype", ["bool", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float32", "float64"]
)
def test_ome_tiff_writes_every_other_pixel_type(tmp_path, dtype):
    data = (np.arange(2 * 6 * 7) % 2).reshape(2, 6, 7).astype(dtype)
    out = tmp_path / "o.ome.tif"
    le.export(data, le.ExportSettings(format="tiff", output=str(out)))
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        np.testing.assert_array_equal(tif.asarray(), data)
