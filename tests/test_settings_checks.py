"""Mistakes in settings and project files that are refused when they are read (issue #26 item
20), one ``error:`` line and exit status 2 each, before anything is planned or written."""

from __future__ import annotations

import numpy as np
import pytest

import lazyexport as le
from helpers import run_cli, snapshot


@pytest.fixture
def workdir(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(4 * 6 * 7, dtype="uint16").reshape(4, 6, 7))
    return tmp_path


def one_error_line(workdir, *args) -> str:
    before = snapshot(workdir)
    run = run_cli(*args, cwd=workdir)
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert snapshot(workdir) == before
    return lines[0]


@pytest.mark.parametrize("low,high", [("p90", "p10"), ("p99.9", "p0.1"), ("p10", "p9.99")])
def test_reversed_percentiles_are_refused_when_read(workdir, low, high):
    """Before: ``p90,p10`` was planned, and its note said 90 % of the values lie below and 90 %
    above the range."""
    line = one_error_line(
        workdir, "export", "v.npy", "--renormalize", f"{low},{high}:0,255", "--plan"
    )
    assert f"[{low}, {high}]: the first percentile must be below the second" in line
    with pytest.raises(le.ExportError, match="the first percentile must be below the second"):
        le.ExportSettings(renormalize=((low, high), (0, 255)))
    # the right way round, and reversed numbers (an inversion), are fine
    le.ExportSettings(renormalize=((high, low), (0, 255)))
    le.ExportSettings(renormalize=((255, 0), (0, 1)))


@pytest.mark.parametrize("nickname", ["../x", "a/b", "a\\b", ".."])
def test_a_nickname_that_leaves_the_directory_is_refused(workdir, nickname):
    """Before: ``--nickname ../x`` wrote ``../x_export.h5``, outside the output directory."""
    line = one_error_line(workdir, "export", "v.npy", "--nickname", nickname, "--plan")
    assert f"nickname {nickname!r} must not contain" in line
    (workdir / "p.toml").write_text(
        f'[settings]\nformat = "npy"\n\n[[datasets]]\nsource = "v.npy"\nnickname = {nickname!r}\n'
    )
    line = one_error_line(workdir, "batch", "p.toml", "list")
    assert line.startswith("error: p.toml: dataset 1: nickname ") and "must not contain" in line
    with pytest.raises(le.ExportError, match="must not contain"):
        le.batch.Dataset("v.npy", nickname)


def test_dots_inside_a_nickname_are_fine():
    """Only '..' as the whole name climbs a directory: ``scan..v2`` (a default nickname taken from
    such a file name) stays a nickname, so a saved project loads again."""
    assert le.batch.Dataset("v.npy", "scan..v2").nickname == "scan..v2"


def test_a_project_source_must_be_one_path(workdir):
    """Before: ``source = ["a.npy", "b.npy"]`` loaded, and listing or exporting it failed with
    a glob source naming the list's text."""
    (workdir / "p.toml").write_text('[[datasets]]\nsource = ["v.npy", "w.npy"]\n')
    for action in ("list", "export-all"):
        line = one_error_line(workdir, "batch", "p.toml", action)
        assert "p.toml: dataset 1: a dataset's source must be one path or URL (text), got [" in line
    with pytest.raises(le.ExportError, match="one path or URL"):
        le.Batch.load(workdir / "p.toml")
    # a path object is one path
    assert le.batch.Dataset(workdir / "v.npy").source == str(workdir / "v.npy")


def test_the_former_tiff_flavor_default_stays_valid_from_python():
    """tiff_flavor defaulted to "plain" before an .ome.tif name could choose OME-TIFF (None now):
    Python code passing "plain" with another format is still accepted, as it was; another
    flavor is refused as before."""
    le.ExportSettings(format="zarr", tiff_flavor="plain")
    with pytest.raises(le.ExportError, match="does not apply to format zarr"):
        le.ExportSettings(format="zarr", tiff_flavor="ome")
