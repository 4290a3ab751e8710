"""``lazyexport demo`` without ``--output-dir`` leaves nothing in the temporary directory, also
when it fails; with ``--output-dir`` its outputs stay."""

from __future__ import annotations

import tempfile

import pytest

from lazyexport import demo
from lazyexport.cli import main


@pytest.fixture
def small_demo(tmp_path, monkeypatch):
    """The demo at a small size, its temporary directory under ``tmp_path / "tmp"``."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    small = demo.sample_volume((160, 24, 20), chunks=(32, 24, 20))
    monkeypatch.setattr(demo, "sample_volume", lambda: small)
    return temp


def test_the_demo_removes_its_outputs_from_the_temporary_directory(small_demo, capsys):
    assert main(["demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("[read back OK]") == 3
    assert "now removed" in out
    assert list(small_demo.iterdir()) == []


def test_a_failed_demo_leaves_nothing_either(small_demo, monkeypatch, capsys):
    from lazyexport import cli

    def fails(volume, z):
        raise RuntimeError("checking the read-back failed")

    monkeypatch.setattr(cli, "execute_reference_plane", fails)
    assert main(["demo", "--quiet"]) == 1
    assert "checking the read-back failed" in capsys.readouterr().err
    assert list(small_demo.iterdir()) == []


def test_an_output_dir_keeps_the_outputs(small_demo, tmp_path, capsys):
    kept = tmp_path / "kept"
    assert main(["demo", "--quiet", "--output-dir", str(kept)]) == 0
    assert f"Outputs are in {kept}" in capsys.readouterr().out
    names = sorted(p.suffix or p.name for p in kept.iterdir())
    assert names == [".h5", ".zarr", "sample_slices"]
