"""TIFF outputs hold what their flavor can: OME-TIFF's pixel types are checked when planning
(issue #26 item 12), and the axis order stored is the one asked where the flavor allows it, or
the plan says which, and the result's axes are the file's (item 16)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import lazyexport as le
from helpers import run_cli


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


def _file(path) -> tuple[tuple[int, ...], str, np.ndarray]:
    """What a TIFF reader sees: series 0's shape, axes and values."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return tuple(series.shape), series.axes, series.asarray()


@pytest.mark.parametrize("c", [1, 3, 5])
@pytest.mark.parametrize("tiled", [False, True])
def test_plain_tiff_stores_channels_last_as_asked(tmp_path, monkeypatch, c, tiled):
    """Issue #26 item 16. Before: ``zyxc`` was stored as ``zcyx`` pages while the result's axes
    said ``zyxc``, and no note said so. Now c last is the pixels' samples."""
    from lazyexport.formats import tiff

    if tiled:  # planes over this many bytes are written in 512x512 tiles
        monkeypatch.setattr(tiff, "TILED_PLANE_BYTES", 1000)
    data = np.random.default_rng(c).integers(0, 250, (3, 600, 530, c)).astype("uint8")
    for compression in ("none", "zlib"):
        out = tmp_path / f"o_{compression}.tif"
        result = le.export(
            le.open_source(data, axes="zyxc"),
            le.ExportSettings(format="tiff", compression=compression, output=str(out)),
        )
        assert result.axes == ("z", "y", "x", "c") and not result.notes
        shape, axes, values = _file(out)
        assert (shape, axes) == (data.shape, "ZYXC")
        np.testing.assert_array_equal(values, data)
        np.testing.assert_array_equal(le.open_exported(result).values, data)


@pytest.mark.parametrize("c", [1, 3])
def test_a_tiff_sequence_stores_channels_last_as_asked(tmp_path, c):
    data = np.random.default_rng(c).integers(0, 60000, (3, 20, 30, c)).astype("uint16")
    result = le.export(
        le.open_source(data, axes="zyxc"),
        le.ExportSettings(format="tiff-sequence", output=str(tmp_path / "s/z{slice_index}.tif")),
    )
    assert result.axes == ("z", "y", "x", "c") and not result.notes
    for k, path in enumerate(result.paths):
        shape, axes, values = _file(path)
        assert (shape, axes) == (data.shape[1:], "YXC")
        np.testing.assert_array_equal(values, data[k])
    np.testing.assert_array_equal(le.open_exported(result).values, data)


@pytest.mark.parametrize(
    "fmt,options,order,stored,says",
    [
        ("tiff", {}, "zycx", "zcyx", "TIFF planes are two spatial axes"),
        ("tiff-sequence", {}, "zycx", "zcyx", "a slice's channels are its first axis"),
        (
            "tiff",
            {"tiff_flavor": "imagej"},
            "czyx",
            "zcyx",
            "an ImageJ hyperstack's order is TZCYX",
        ),
        ("tiff", {"tiff_flavor": "ome"}, "zyxc", "zcyx", "OME-TIFF planes are y by x"),
    ],
)
def test_an_order_the_file_cannot_store_is_noted_and_the_result_has_the_file_s(
    tmp_path, fmt, options, order, stored, says
):
    """Before: the file stored another order than the result's axes said, silently."""
    data = np.random.default_rng(0).integers(0, 250, (3, 4, 20, 30)).astype("uint8")  # czyx
    template = "s/z{slice_index}.tif" if fmt == "tiff-sequence" else "o.tif"
    settings = le.ExportSettings(
        format=fmt, axis_order=order, output=str(tmp_path / template), **options
    )
    plan = le.plan(le.open_source(data, axes="czyx"), settings)
    note = f"{fmt} stores axes in the order {stored!r} (not {order!r}): {says}"
    assert any(n.startswith(note) for n in plan.notes), plan.notes
    result = le.export(le.open_source(data, axes="czyx"), settings)
    assert "".join(result.axes) == stored
    expected = data.transpose(["czyx".index(a) for a in stored])
    if fmt == "tiff":
        shape, axes, values = _file(result.output)
        assert (shape, axes.lower()) == (expected.shape, stored)
        np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(le.open_exported(result).values, expected)
