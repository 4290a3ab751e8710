"""Mistakes a user can fix get one ``error:`` line and exit status 2, before anything is
computed where that is possible: compression levels out of range, outputs where a file is in
the way, a full or read-only disk during the writes."""

from __future__ import annotations

import errno
from typing import Any

import numpy as np
import pytest

import lazyexport as le
from helpers import hidden_temps, run_cli
from lazyexport import cli
from lazyexport.errors import OutputLocationError, SettingsError


@pytest.fixture
def volume(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(4 * 32 * 32, dtype="uint16").reshape(4, 32, 32))
    return tmp_path / "v.npy"


@pytest.mark.parametrize(
    "fmt,compression,level,message",
    [
        ("zarr", None, 99, "out of range for zstd .*give 1 to 22"),
        ("zarr", "gzip", -5, "out of range for gzip; give 0 to 9"),
        ("hdf5", "gzip", 10, "out of range for gzip; give 0 to 9"),
        ("hdf5", "blosc", 12, "out of range for blosc"),
        ("tiff", None, 5, "compression 'none' .*default of format tiff.* has no level.*zlib, lzma"),
        ("hdf5", "lzf", 3, "compression 'lzf' has no level"),
    ],
)
def test_a_compression_level_the_codec_does_not_take_is_refused(fmt, compression, level, message):
    with pytest.raises(SettingsError, match=message):
        le.ExportSettings(format=fmt, compression=compression, compression_level=level)


def test_levels_in_range_still_export(volume, tmp_path):
    for fmt, compression, level in (("zarr", "zstd", 22), ("hdf5", "gzip", 9), ("tiff", "zlib", 0)):
        result = le.export(
            str(volume),
            le.ExportSettings(
                format=fmt,
                compression=compression,
                compression_level=level,
                output=str(tmp_path / f"o-{fmt}"),
            ),
        )
        np.testing.assert_array_equal(np.asarray(le.open_exported(result)), np.load(volume))


def test_cli_compression_level_out_of_range_is_one_line(volume):
    run = run_cli(
        "export", str(volume), "--format", "zarr", "--compression-level", "99", cwd=volume.parent
    )
    assert run.returncode == 2 and run.stderr.count("error:") == 1 and "give 1 to 22" in run.stderr
    assert "Traceback" not in run.stderr and not list(volume.parent.glob("*.zarr"))


def test_a_file_where_the_output_directory_goes_is_refused_before_computing(volume, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run = run_cli(
        "export", str(volume), "--format", "hdf5", "--output", f"{tmp_path}/notes.txt/sub/out.h5"
    )
    assert run.returncode == 2 and run.stderr.count("error:") == 1, run.stderr
    assert "notes.txt is a file" in run.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_unwritable_output_directory_is_refused_before_computing(volume, tmp_path, monkeypatch):
    """(As root, permissions do not stop a write, so the read-only answer is simulated.)"""
    import lazyexport.run as run_module

    def computed(*args, **kwargs):
        raise AssertionError("computed although the output cannot be written")

    real_access = run_module.os.access
    monkeypatch.setattr(
        run_module.os,
        "access",
        lambda path, mode: False if str(path) == str(tmp_path / "ro") else real_access(path, mode),
    )
    monkeypatch.setattr(run_module, "_write_all", computed)
    (tmp_path / "ro").mkdir()
    with pytest.raises(OutputLocationError, match="read-only file system, or no permission"):
        le.export(
            str(volume), le.ExportSettings(format="zarr", output=str(tmp_path / "ro" / "o.zarr"))
        )


@pytest.mark.parametrize(
    "code,words",
    [(errno.ENOSPC, "no space left on the device"), (errno.EROFS, "a read-only file system")],
)
def test_a_full_or_read_only_disk_during_the_writes_is_one_line_and_leaves_nothing(
    volume, tmp_path, monkeypatch, capsys, code, words
):
    from lazyexport.formats import npy

    def failing_write(self, block, location):
        raise OSError(code, "simulated", str(self.temp))

    monkeypatch.setattr(npy.NpyTarget, "write", failing_write)
    status = cli.main(
        ["export", str(volume), "--format", "npy", "--output", f"{tmp_path}/out/o.npy", "--quiet"]
    )
    err = capsys.readouterr().err
    assert (
        status == 2
        and err.count("error:") == 1
        and words in err
        and "temporary output was removed" in err
    )
    assert hidden_temps(tmp_path) == [] and not (tmp_path / "out" / "o.npy").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system of its own (tmpfs), unmounted afterwards; skipped only where it
    cannot be mounted (no root, no tmpfs)."""
    import subprocess

    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


BIG = (np.arange(16 * 256 * 256) % 65521).astype("uint16").reshape(16, 256, 256)  # 2 MiB


def _fill(directory) -> None:
    """Write a file in ``directory`` until its file system is full."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\xff" * 4096)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_small_disk_filled_by_a_tiff_sequence_is_one_line_and_leaves_nothing(
    small_disk, tmp_path
):
    """Issue 26 item 10 on a real full file system. Before: tifffile's short write came out as
    'error: export failed: OSError: 65536 requested and 48968 written' (exit 1) and the
    directory the export made stayed."""
    np.save(tmp_path / "big.npy", BIG)
    template = f"{small_disk}/seq/s{{slice_index}}.tif"
    run = run_cli(
        "export", "big.npy", "--format", "tiff-sequence", "--output", template, cwd=tmp_path
    )
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "no space left on the device" in lines[0] and "temporary output was removed" in lines[0]
    assert list(small_disk.iterdir()) == []


def test_a_small_disk_full_at_the_commit_is_one_line_and_leaves_no_record(small_disk):
    """The slices fit, the commit's record does not (the disk filled after the last block):
    one line, nothing left, not even an empty .commit.new (before: one stayed, which neither
    the next export nor `lazyexport clean` removed)."""
    out = small_disk / "seq" / "s{slice_index}.tif"
    total = []

    def fill_after_the_last_block(event):
        total.append(event)
        if event.blocks_done == event.blocks_total:
            _fill(small_disk)

    with pytest.raises(OutputLocationError, match="no space left on the device"):
        le.export(
            le.open_source(BIG[:4, :128], axes="zyx"),
            le.ExportSettings(format="tiff-sequence", output=str(out)),
            progress=fill_after_the_last_block,
        )
    assert total and sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_a_full_disk_as_a_short_write_or_at_the_commit_is_one_line_and_leaves_nothing(
    volume, tmp_path, monkeypatch, capsys
):
    """The same as the two tests above with the error injected (runs everywhere): numpy's short
    write without an error number, and ENOSPC while the commit record is written."""
    import tifffile

    from lazyexport.storage import local as storage

    def short_write(*args, **kwargs):
        raise OSError("65536 requested and 48968 written")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = f"{tmp_path}/out/s{{slice_index}}.tif"
    for target, name, fault in ((tifffile, "imwrite", short_write), (storage.os, "fsync", full)):
        with monkeypatch.context() as patch:
            patch.setattr(target, name, fault)
            status = cli.main(
                ["export", str(volume), "--format", "tiff-sequence", "--output", out, "--quiet"]
            )
        err = capsys.readouterr().err
        assert status == 2 and err.count("error:") == 1 and "no space left on the device" in err
        assert "temporary output was removed" in err
        assert not (tmp_path / "out").exists() and hidden_temps(tmp_path) == []


def test_clean_removes_an_unfinished_commit_record_and_its_run(tmp_path, capsys):
    """An empty .commit.new (its writing never finished: the renames never began) left by a
    dead run, beside that run's temporaries: `lazyexport clean` removes them all and says
    what the record is (before: it tried to finish it, failed, and kept it for good)."""
    from lazyexport import storage

    token = f"t0badf00dp{2**22 + 17}h{storage.host_tag()}"
    (tmp_path / f".s0.tif.lazyexport-{token}.commit.new").write_bytes(b"")
    for i in range(2):
        (tmp_path / f".s{i}.tif.lazyexport-{token}.tmp").write_bytes(b"II*\0")
    assert cli.main(["clean", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "whose writing never finished" in out and "interrupted commit, finished" not in out
    assert hidden_temps(tmp_path) == []


def test_a_source_that_cannot_be_read_is_not_called_an_output_problem(
    volume, tmp_path, monkeypatch
):
    from lazyexport.sources import base

    def unreadable(self, key):
        raise PermissionError(errno.EACCES, "Permission denied", str(volume))

    monkeypatch.setattr(base.FileArray, "__getitem__", unreadable)
    with pytest.raises(
        le.errors.SourceError,
        match=r"cannot read .*v\.npy at z=0:4, y=0:32, x=0:32: PermissionError: "
        r".*Permission denied",
    ) as info:
        le.export(str(volume), le.ExportSettings(format="zarr", output=str(tmp_path / "o.zarr")))
    assert "output" not in str(info.value) and "corrupt" not in str(info.value)
    assert not (tmp_path / "o.zarr").exists()


# -- options only some formats use: refused where the format does not use them -----------------

OPTION_VALUES: dict[str, Any] = {
    "zarr_format": 2,
    "shards": "auto",
    "levels": 2,
    "downsample": "mode",
    "tiff_flavor": "ome",
    "pixel_size": {"x": 0.5},
    "unit": "nanometer",
}


@pytest.mark.parametrize("option", sorted(OPTION_VALUES))
@pytest.mark.parametrize("fmt", le.formats.formats())
def test_an_option_is_refused_for_a_format_that_does_not_use_it_never_ignored(fmt, option):
    """Generated from the registry: every format against every format-specific option, as its
    capabilities declare them."""
    from lazyexport.formats import get_writer
    from lazyexport.formats.base import FORMAT_OPTIONS
    from lazyexport.settings import MIRRORED  # built-in options their writers declare now

    assert set(OPTION_VALUES) == set(FORMAT_OPTIONS) | set(MIRRORED)
    if option in get_writer(fmt).capabilities.options:
        if option == "shards" or (option == "zarr_format" and fmt == "zarr"):
            return  # (their own rules: see test_shards.py)
        assert (
            getattr(le.ExportSettings(format=fmt, **{option: OPTION_VALUES[option]}), option)
            is not None
        )
        return
    with pytest.raises(
        SettingsError,
        match=rf"^{option} \(--{option.replace('_', '-')}: .*\) does not apply to "
        rf"format {fmt}, only to ",
    ):
        le.ExportSettings(format=fmt, **{option: OPTION_VALUES[option]})


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "hdf5", "--zarr-format", "3"],
        ["--format", "zarr", "--tiff-flavor", "plain"],
        ["--format", "hdf5", "--levels", "3"],
        ["--format", "npy", "--pixel-size", "x=0.5"],
    ],
)
def test_cli_format_options_given_for_another_format_are_one_line_even_at_their_default(
    volume, args
):
    run = run_cli("export", str(volume), *args, cwd=volume.parent)
    assert (
        run.returncode == 2
        and run.stderr.count("error:") == 1
        and "does not apply to format" in run.stderr
    ), run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in volume.parent.iterdir()) == ["v.npy"]  # nothing created
