"""A symbolic link planted at the name of a temporary, journal, owner file or commit record is
never written, read as a record or deleted through (issue #26 item 13).

A ``--resume`` export's names are a hash of its plan, so anyone who can write beside the output
can predict them; before the fix a link at ``.o.zarr.lazyexport-r<hash>.commit.new`` made the
export overwrite the link's target with its commit record.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import lazyexport as le
from helpers import run_cli
from lazyexport.plan import build_plan
from lazyexport.resume import plan_token
from lazyexport.storage import commit_renames, write_durably

PRECIOUS = "precious data that is not lazyexport's\n"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    np.save(tmp_path / "v.npy", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8))
    return tmp_path


def _settings(work: Path, fmt: str = "zarr") -> le.ExportSettings:
    output = "o.zarr" if fmt == "zarr" else "s/z{slice_index}.tif"
    return le.ExportSettings(format=fmt, output=str(work / output))


def _victim(work: Path, directory: bool = False) -> Path:
    victim = work / "elsewhere" / "victim"
    victim.parent.mkdir(exist_ok=True)
    if directory:
        victim.mkdir()
        (victim / "keep.txt").write_text(PRECIOUS)
    else:
        victim.write_text(PRECIOUS)
    return victim


def _untouched(victim: Path) -> bool:
    if victim.is_dir():
        return (
            sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
            and (victim / "keep.txt").read_text() == PRECIOUS
        )
    return victim.read_text() == PRECIOUS


@pytest.mark.parametrize(
    "fmt, kind",
    [
        ("zarr", "commit.new"),
        ("zarr", "commit"),
        ("zarr", "blocks"),
        ("zarr", "blocks.new"),
        ("zarr", "owner"),
        ("zarr", "tmp"),
        ("tiff-sequence", "tmp"),
        ("tiff-sequence", "commit.new"),
    ],
)
def test_a_link_at_a_resume_name_is_refused_and_its_target_untouched(work, fmt, kind):
    settings = _settings(work, fmt)
    plan = build_plan(str(work / "v.npy"), settings)
    token = plan_token(plan)
    first = plan.paths[0]
    first.parent.mkdir(parents=True, exist_ok=True)
    victim = _victim(work, directory=kind == "tmp" and fmt == "zarr")
    link = first.with_name(f".{first.name}.lazyexport-{token}.{kind}")
    os.symlink(victim, link)
    with pytest.raises(le.ExportError, match="is a symbolic link") as caught:
        le.export(str(work / "v.npy"), settings, resume=True)
    assert "\n" not in str(caught.value)
    assert _untouched(victim)
    assert link.is_symlink()  # not lazyexport's to remove either
    assert not first.exists()


def test_a_link_inside_a_kept_temporary_output_is_refused(work):
    settings = _settings(work)
    plan = build_plan(str(work / "v.npy"), settings)
    temp = work / f".o.zarr.lazyexport-{plan_token(plan)}.tmp"
    temp.mkdir()
    victim = _victim(work)
    os.symlink(victim, temp / "zarr.json")
    with pytest.raises(le.ExportError, match="zarr.json is a symbolic link"):
        le.export(str(work / "v.npy"), settings, resume=True)
    assert _untouched(victim)


def test_the_command_refuses_a_planted_link_in_one_line(work):
    settings = _settings(work)
    plan = build_plan(str(work / "v.npy"), settings)
    victim = _victim(work)
    os.symlink(victim, work / f".o.zarr.lazyexport-{plan_token(plan)}.commit.new")
    done = run_cli(
        "export",
        str(work / "v.npy"),
        "--format",
        "zarr",
        "--output",
        str(work / "o.zarr"),
        "--resume",
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert _untouched(victim)


def test_a_durable_write_replaces_a_link_at_its_temporary_name_never_the_target(tmp_path):
    victim = _victim(tmp_path)
    record = tmp_path / ".o.h5.lazyexport-t0123abcdp1h000000.commit"
    os.symlink(victim, record.with_name(record.name + ".new"))
    write_durably(record, "{}")
    assert _untouched(victim)
    assert record.read_text() == "{}" and not record.is_symlink()
    assert not record.with_name(record.name + ".new").exists()


def test_a_durable_write_replaces_a_link_at_the_name_itself(tmp_path):
    victim = _victim(tmp_path)
    journal = tmp_path / ".o.zarr.lazyexport-r0123456789abcdef.blocks"
    os.symlink(victim, journal)
    write_durably(journal, "header\n")
    assert _untouched(victim)
    assert journal.read_text() == "header\n" and not journal.is_symlink()


def test_a_commit_writes_its_record_beside_a_planted_link_not_through_it(tmp_path):
    temp = tmp_path / ".o.npy.lazyexport-t0123abcdp1h000000.tmp"
    temp.write_bytes(b"data")
    victim = _victim(tmp_path)
    os.symlink(victim, tmp_path / ".o.npy.lazyexport-t0123abcdp1h000000.commit.new")
    commit_renames([(temp, tmp_path / "o.npy")])
    assert _untouched(victim)
    assert (tmp_path / "o.npy").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "o.npy"]


def test_the_journal_is_never_appended_through_a_link(tmp_path):
    from lazyexport.resume import Journal

    victim = _victim(tmp_path)
    journal = Journal(tmp_path / ".o.zarr.lazyexport-r0123456789abcdef.blocks", ((4,), (8,)))
    journal.load()
    journal.path.unlink()
    os.symlink(victim, journal.path)  # swapped in while the export runs
    with pytest.raises(OSError):
        journal.record((0, 0))
    assert _untouched(victim)


def test_a_directory_at_a_temporary_name_is_refused_not_removed(tmp_path):
    from lazyexport.errors import OutputLocationError

    record = tmp_path / ".o.h5.lazyexport-t0123abcdp1h000000.commit"
    planted = record.with_name(record.name + ".new")
    planted.mkdir()
    (planted / "keep.txt").write_text(PRECIOUS)
    with pytest.raises(OutputLocationError, match="is in the way"):
        write_durably(record, "{}")
    assert (planted / "keep.txt").read_text() == PRECIOUS
    assert not record.exists()
