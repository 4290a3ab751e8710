"""ilastik's headless export flags: each one, given as ilastik spells it, writes the same output as
the lazyexport option it stands for (compared array, dtype, axes and codec; TIFF and PNG slices
byte for byte)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import make_data, write_hdf5
from lazyexport import cli
from lazyexport.sources import open_exported

SHAPE = (6, 20, 24)


@pytest.fixture
def src(tmp_path) -> tuple[Path, np.ndarray]:
    data = make_data("uint16", SHAPE)
    made = write_hdf5(tmp_path / "raw.h5", data, axes="zyx", dataset="volume/raw")
    return made.file, data


def _run(*args: str) -> None:
    assert cli.main([str(a) for a in args]) == 0


def _digest(files: list[Path]) -> list[str]:
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


# (ilastik's flags, lazyexport's flags, output name): the same export both ways
CASES = {
    "output_format hdf5": (["--output_format=hdf5"], ["--format", "hdf5", "--compression", "none"]),
    "output_format compressed hdf5": (
        ["--output_format=compressed hdf5"],
        ["--format", "hdf5", "--compression", "gzip"],
    ),
    "output_format numpy": (["--output_format=numpy"], ["--format", "npy"]),
    "output_format multipage tiff": (["--output_format=multipage tiff"], ["--format", "tiff"]),
    "output_format compressed n5": (["--output_format=compressed n5"], ["--format", "n5"]),
    "export_dtype": (["--export_dtype=uint8"], ["--dtype", "uint8"]),
    "output_axis_order": (["--output_axis_order=xyz"], ["--axis-order", "xyz"]),
    "input_axes": (["--input_axes=tyx"], ["--axes", "tyx"]),
    "cutout_subregion": (
        ["--cutout_subregion=[(1,None,4),(5,15,None)]"],
        ["--roi", "z=1:5,y=:15,x=4:"],
    ),
    "cutout_subregion with ilastik's channel": (
        ["--cutout_subregion=[(None,2,2,0),(3,None,None,1)]"],
        ["--roi", "z=:3,y=2:,x=2:"],
    ),
    "export_drange + pipeline_result_drange": (
        ["--export_drange=(0,255)", "--pipeline_result_drange=(0,65535)", "--export_dtype=uint8"],
        ["--renormalize", "0,65535:0,255", "--dtype", "uint8"],
    ),
    "export_drange without export_dtype: the source's type": (
        ["--export_drange=(0,255)", "--pipeline_result_drange=(0,65535)"],
        ["--renormalize", "0,65535:0,255", "--dtype", "uint16"],
    ),
    "cutout_subregion clipped to the data": (
        ["--cutout_subregion=[(-3,2,0,0),(4,99,0,100)]"],
        ["--roi", "z=0:4,y=2:"],
    ),
    "output_format tif": (["--output_format=tif"], ["--format", "tiff"]),
    "output_format n5": (["--output_format=n5"], ["--format", "n5", "--compression", "raw"]),
    "output_format single-scale OME-Zarr": (
        ["--output_format=single-scale OME-Zarr"],
        ["--format", "ome-zarr", "--levels", "1"],
    ),
    "output_format multi-scale OME-Zarr": (
        ["--output_format=multi-scale OME-Zarr"],
        ["--format", "ome-zarr"],
    ),
    "output_internal_path ignored by a numpy output": (
        ["--output_format=numpy", "--output_internal_path=volume/pred"],
        ["--format", "npy"],
    ),
}
EXTENSIONS = {"numpy": ".npy", "tif": ".tif", "n5": ".n5", "OME-Zarr": ".ome.zarr"}


@pytest.mark.parametrize("case", CASES)
def test_an_ilastik_flag_writes_what_the_lazyexport_option_writes(tmp_path, src, case):
    ours, theirs = CASES[case][1], CASES[case][0]
    ext = next((e for k, e in EXTENSIONS.items() if k in case), ".h5")
    source, _ = src
    a, b = tmp_path / f"ilastik{ext}", tmp_path / f"lazyexport{ext}"
    _run("export", "--headless", f"--raw_data={source}/volume/raw", *theirs,
         f"--output_filename_format={a}")  # fmt: skip
    _run("export", f"{source}/volume/raw", *ours, "--output", b)
    got, want = open_exported(a), open_exported(b)
    assert got.dims == want.dims and got.dtype == want.dtype
    np.testing.assert_array_equal(got.values, want.values)
    if ext == ".h5":
        with h5py.File(a) as fa, h5py.File(b) as fb:
            da, db = fa["exported_data"], fb["exported_data"]
            assert (da.compression, da.chunks) == (db.compression, db.chunks)
    if ext == ".tif":
        assert _digest([a]) == _digest([b])
    if ext == ".ome.zarr":
        levels = [sorted(p.name for p in x.iterdir() if p.is_dir()) for x in (a, b)]
        assert levels[0] == levels[1] and ("single" not in case or levels[0] == ["0"])


def test_output_internal_path_and_a_sequence_format(tmp_path, src):
    source, data = src
    a = f"--output_filename_format={tmp_path}/a.h5"
    _run("export", f"--raw_data={source}/volume/raw", "--output_format=hdf5", a,
         "--output_internal_path=volume/pred")  # fmt: skip
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_array_equal(f["volume/pred"][...], data)
    for fmt, ours, ext in (("tiff sequence", "tiff-sequence", "tif"),
                           ("png sequence", "png-sequence", "png")):  # fmt: skip
        _run("export", f"{source}/volume/raw", f"--output_format={fmt}", "--export_dtype=uint8",
             "--export_drange=(0,255)", "--pipeline_result_drange=(0,65535)",
             f"--output_filename_format={tmp_path}/i/s_{{slice_index}}.{ext}")  # fmt: skip
        _run("export", f"{source}/volume/raw", "--format", ours, "--dtype", "uint8",
             "--renormalize", "0,65535:0,255",
             "--output", f"{tmp_path}/l/s_{{slice_index}}.{ext}")  # fmt: skip
        ilastik_files = sorted((tmp_path / "i").glob(f"*.{ext}"))
        assert len(ilastik_files) == SHAPE[0]
        assert _digest(ilastik_files) == _digest(sorted((tmp_path / "l").glob(f"*.{ext}")))


@pytest.mark.parametrize(
    "args,says",
    [
        (["--output_format=jpeg sequence"], "has no lazyexport equivalent"),
        (["--output_format=hdf5", "--format", "zarr"], "not both"),
        (["--cutout_subregion=[(0,0),(1,1)]"], "the source's axes are 'zyx'"),
        (["--cutout_subregion=[(0,0,0,2),(1,1,1,3)]"], "single channel"),
        (["--cutout_subregion=(0,0"], "cannot read --cutout_subregion"),
        (
            ["--export_drange=0:255", "--pipeline_result_drange=(0,9)"],
            "cannot read --export_drange",
        ),
        (["--output_internal_path=x"], "needs --output_filename_format"),
        (["--export_drange=(0,255)"], "needs --pipeline_result_drange"),
        (["--cutout_subregion=[(0,0,0,1),(1,1,1,2)]"], "nothing of the source's single channel"),
        (["--cutout_subregion=[(0,30,0),(1,40,1)]"], "nothing of axis y (30:20 of 20)"),
        (["--output_format=multipage tiff sequence"], "has no lazyexport equivalent"),
    ],
)
def test_ilastik_flags_that_do_not_fit_are_one_line(tmp_path, src, capsys, args, says):
    source, _ = src
    before = sorted(tmp_path.rglob("*"))
    status = cli.main(["export", f"{source}/volume/raw", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_what_ilastik_flags_did_beyond_the_settings_is_noted(tmp_path, src, capsys):
    source, data = src
    _run("export", f"{source}/volume/raw", "--cutout_subregion=[(-3,2,0),(4,99,None)]",
         "--output_internal_path=pred", "--output_format=numpy",
         f"--output_filename_format={tmp_path}/o.npy")  # fmt: skip
    err = capsys.readouterr().err
    assert "clipped to the data, as ilastik does: z=-3:4 to z=0:4, y=2:99 to y=2:20" in err, err
    assert "--output_internal_path applies to hdf5 and n5 only, as in ilastik: not to npy" in err
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), data[0:4, 2:20])
