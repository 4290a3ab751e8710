"""The output's extension and the format agree: the command line takes the format the extension
names when --format is not given, and an extension of another format is refused in one line
(never an HDF5 file named ``out.zarr``)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import lazyexport as le
from lazyexport import cli
from lazyexport.formats import format_for
from lazyexport.sources import open_exported


@pytest.mark.parametrize(
    "template,expected",
    [
        ("out.zarr", "zarr"),
        ("out.ome.zarr", "ome-zarr"),
        ("out.zarr/level0", "zarr"),
        ("out.h5/exported_data", "hdf5"),
        ("out.HDF5", "hdf5"),
        ("out.tif", "tiff"),
        ("out.ome.tiff", "tiff"),
        ("slices/z{slice_index}.tif", "tiff-sequence"),
        ("slices/z{slice_index}.png", "png-sequence"),
        ("out.npy", "npy"),
        ("out.n5", "n5"),
        ("{dataset_dir}/{nickname}_export", None),
        ("run.1/out", None),
        ("out.png", None),  # a PNG is a sequence's slice: no {slice_index}, no format
    ],
)
def test_the_extension_names_a_format(template, expected):
    assert format_for(template) == expected


def test_the_command_line_takes_the_format_the_extension_names(tmp_path, capsys):
    data = np.arange(4 * 6 * 8, dtype="uint16").reshape(4, 6, 8)
    np.save(tmp_path / "v.npy", data)
    for output in ("o.zarr", "o.ome.zarr", "o.tif", "s/z{slice_index}.tif"):
        assert (
            cli.main(["export", str(tmp_path / "v.npy"), "--output", str(tmp_path / output)]) == 0
        )
    out = capsys.readouterr().out
    assert "wrote zarr" in out and "wrote ome-zarr" in out and "wrote tiff " in out
    assert "wrote tiff-sequence" in out
    assert zarr.open_array(str(tmp_path / "o.zarr")).shape == data.shape
    np.testing.assert_array_equal(open_exported(str(tmp_path / "o.tif")).values, data)


@pytest.mark.parametrize(
    "args,says",
    [
        (["--format", "hdf5", "--output", "{dir}/o.zarr"],
         "has the extension of format zarr, but the format is hdf5"),
        (["--format", "npy", "--output", "{dir}/o.h5"],
         "has the extension of format hdf5, but the format is npy"),
        (["--format", "n5", "--output", "{dir}/o.tif"], "--format tiff"),
    ],
)  # fmt: skip
def test_an_extension_of_another_format_is_refused(tmp_path, capsys, args, says):
    np.save(tmp_path / "v.npy", np.zeros((2, 3, 4), "uint8"))
    before = sorted(tmp_path.iterdir())
    args = [a.replace("{dir}", str(tmp_path)) for a in args]
    assert cli.main(["export", str(tmp_path / "v.npy"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert sorted(tmp_path.iterdir()) == before


def test_the_python_api_refuses_a_mismatch_and_keeps_what_agrees(tmp_path):
    data = np.zeros((2, 3, 4), "uint8")
    with pytest.raises(le.ExportError, match="give the format zarr"):
        le.export(data, le.ExportSettings(output=str(tmp_path / "o.zarr")))  # format: hdf5
    # a Zarr output named .ome.zarr, an OME-Zarr named .zarr: the format's own extensions
    le.export(data, le.ExportSettings(format="zarr", output=str(tmp_path / "a.ome.zarr")))
    le.export(data, le.ExportSettings(format="ome-zarr", output=str(tmp_path / "b.zarr")))
    assert (tmp_path / "a.ome.zarr" / "zarr.json").exists()


@pytest.mark.parametrize("name", ["o.ome.tif", "o.OME.TIFF"])
def test_an_ome_tif_output_is_an_ome_tiff(tmp_path, name):
    """Issue #26 item 15: ``out.ome.tif`` was written as a plain TIFF (tifffile's JSON
    description, no OME-XML), as ``out.ome.zarr`` was not."""
    import tifffile

    data = np.arange(2 * 6 * 7, dtype="uint16").reshape(2, 6, 7)
    np.save(tmp_path / "v.npy", data)
    assert cli.main(["export", str(tmp_path / "v.npy"), "--output", str(tmp_path / name)]) == 0
    with tifffile.TiffFile(tmp_path / name) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), data)
    # from Python too; a flavor given is kept, and a plain .tif stays plain
    le.export(data, le.ExportSettings(format="tiff", output=str(tmp_path / "p.ome.tif"),
                                      tiff_flavor="plain"))  # fmt: skip
    le.export(data, le.ExportSettings(format="tiff", output=str(tmp_path / "p.tif")))
    for plain in ("p.ome.tif", "p.tif"):
        with tifffile.TiffFile(tmp_path / plain) as tif:
            assert not tif.is_ome and tif.is_shaped
