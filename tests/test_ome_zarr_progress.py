"""An OME-Zarr export's progress covers its pyramid (issue 29): the coarser levels are built
after the last block, before the commit, so the fraction stays below 1 until the output is
renamed into place and reaches 1.0 once, after it. The plan (text and JSON) and the result list
every level with its shape and chunks, as the store holds them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

import lazyexport as le
from lazyexport.run import Progress

SHAPE = (48, 160, 192)
CHUNKS = {"z": 16, "y": 32, "x": 32}


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(29).integers(0, 4000, SHAPE, dtype="uint16")


def _export(volume, out, progress, levels=3):
    settings = le.ExportSettings(format="ome-zarr", output=str(out), chunks=CHUNKS, levels=levels)
    source = le.open_source(volume, axes="zyx")
    return le.export(source, settings, progress=progress, memory_limit="64MiB")


def test_the_fraction_rises_below_one_until_the_commit_and_is_one_once_after_it(volume, tmp_path):
    out = tmp_path / "o.ome.zarr"
    seen: list[tuple[Progress, bool]] = []  # (event, whether the output existed then)
    _export(volume, out, lambda e: seen.append((e, out.exists())))
    fractions = [e.fraction for e, _ in seen]
    assert fractions == sorted(fractions)  # monotonic
    assert fractions.count(1.0) == 1 and fractions[-1] == 1.0
    last, existed = seen[-1]
    assert last.committed and existed  # 1.0 only once the output is in place
    before = seen[:-1]
    assert all(e.fraction < 1 and not exists for e, exists in before)
    # the pyramid was reported after level 0's last block, still below 1, output not there yet
    pyramid = [e for e, _ in before if e.blocks_done == e.blocks_total and e.finishing_done]
    assert pyramid and all(e.fraction < 1 for e in pyramid)
    assert pyramid[-1].finishing_done == pyramid[-1].finishing_total
    # the levels read: level 1 (level 2 reads it; the blocks made level 1 in the same pass,
    # tests/test_pyramid_same_pass.py, so level 0 is not read back)
    itemsize = volume.dtype.itemsize
    assert last.finishing_total == 24 * 80 * 96 * itemsize
    # level 0's blocks are counted by their bytes against the levels': the last block's fraction
    work = last.bytes_total + last.finishing_total
    at_level_0 = [e for e, _ in before if e.blocks_done == e.blocks_total][0]
    assert at_level_0.fraction == pytest.approx(0.99 * last.bytes_total / work)


def test_a_failure_in_the_pyramid_never_reports_one(volume, tmp_path, monkeypatch):
    from lazyexport.formats import ome_zarr

    def broken(self, src, dst, factors):
        raise OSError("the disk went away")

    monkeypatch.setattr(ome_zarr.OmeZarrTarget, "build_level", broken)
    seen: list[Progress] = []
    with pytest.raises(OSError, match="went away"):
        _export(volume, tmp_path / "o.ome.zarr", seen.append)
    assert seen and max(e.fraction for e in seen) < 1
    assert not (tmp_path / "o.ome.zarr").exists()


def test_one_level_has_no_finishing_work_and_ends_with_its_last_block(volume, tmp_path):
    seen: list[Progress] = []
    _export(volume, tmp_path / "o.ome.zarr", seen.append, levels=1)
    assert [e.blocks_done for e in seen] == list(range(1, seen[-1].blocks_total + 1))
    assert all(e.finishing_total == 0 for e in seen) and seen[-1].fraction == 1.0


def _stored(out) -> list[tuple[str, tuple, tuple]]:
    group = zarr.open_group(str(out), mode="r")
    return [(p, a.shape, a.chunks) for p, a in sorted(group.arrays())]


def test_the_result_lists_every_level_as_stored(volume, tmp_path):
    out = tmp_path / "o.ome.zarr"
    result = _export(volume, out, None)
    listed = [(a.path, a.shape, a.chunks) for a in result.arrays]
    assert listed == _stored(out) and len(listed) == 3
    assert listed[2] == ("2", (12, 40, 48), (12, 32, 32))  # chunks cut to the level's shape
    lines = str(result).splitlines()
    assert lines[1:4] == [f"  level {a}" for a in result.arrays]
    assert "level 1: (24, 80, 96), chunks (16, 32, 32)" in str(result)


def test_other_formats_list_no_levels(volume, tmp_path):
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"))
    result = le.export(le.open_source(volume, axes="zyx"), settings)
    plan = le.plan(le.open_source(volume, axes="zyx"), settings)
    assert result.arrays == () and plan.summary()["arrays"] == []
    assert "level" not in str(result) and "  level " not in str(plan)


def test_the_plan_text_and_json_list_every_level(volume, tmp_path):
    np.save(tmp_path / "v.npy", volume)
    out = tmp_path / "o.ome.zarr"
    command = [sys.executable, "-m", "lazyexport", "export", str(tmp_path / "v.npy")]
    command += ["--axes", "zyx", "--format", "ome-zarr", "--output", str(out), "--levels", "3"]
    command += ["--chunks", "z=16,y=32,x=32", "--plan"]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    shown = json.loads(
        subprocess.run([*command, "--json"], capture_output=True, text=True, check=True).stdout
    )
    assert not out.exists()
    levels = [(0, (48, 160, 192)), (1, (24, 80, 96)), (2, (12, 40, 48))]
    for n, shape in levels:
        chunks = tuple(min(c, s) for c, s in zip((16, 32, 32), shape))
        made = ", made in the same pass as level 0" if n == 1 else ""
        assert f"  level      {n}: {shape}, chunks {chunks}{made}\n" in text
    assert [(a["path"], tuple(a["shape"])) for a in shown["arrays"]] == [
        (str(n), s) for n, s in levels
    ]
    assert all(a["shards"] is None for a in shown["arrays"])
    # the export writes what the plan listed
    subprocess.run(command[:-1] + ["--quiet"], capture_output=True, check=True)
    assert [(p, list(s), list(c)) for p, s, c in _stored(out)] == [
        (a["path"], a["shape"], a["chunks"]) for a in shown["arrays"]
    ]


def test_the_bar_stays_below_its_total_until_the_commit(volume, tmp_path):
    from lazyexport.cli_output import Bar

    out = tmp_path / "o.ome.zarr"

    class Seen:  # what tqdm is told, and whether the output was in place then
        total = n = 0
        shown: list[tuple[int, int, bool]] = []

        def set_postfix_str(self, text, refresh=True):
            self.postfix = text

        def refresh(self):
            self.shown.append((self.n, self.total, out.exists()))

    bar = Bar(False, "o")
    bar.bar = Seen()
    _export(volume, out, bar)
    shown = Seen.shown
    assert all(n < total and not there for n, total, there in shown[:-1])
    assert shown[-1][0] == shown[-1][1] > 0 and shown[-1][2]  # full only once committed
    assert [n for n, _, _ in shown] == sorted(n for n, _, _ in shown)
    assert "finishing 100%" in bar.bar.postfix
