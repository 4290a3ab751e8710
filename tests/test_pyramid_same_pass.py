"""An OME-Zarr pyramid's level 1 made in the same pass as level 0 (issue 29): each block task
downsamples the block it wrote and writes its level-1 piece (whole level-1 chunks or shards), so
level 0 is never read back to make level 1. The values are those of the old path (level 1 built
from level 0 read back, after the blocks) byte for byte; gaussian (which reads beyond its windows)
keeps the old path; ``--plan`` says which; the task's peak stays within the plan's projection."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers.fresh import run_json
from helpers.pyramids import built_from
from lazyexport.formats import ome_zarr
from lazyexport.formats.ome_zarr import OmeZarrWriter

SHAPE = (37, 70, 67)  # odd ends: short windows at each axis's end
CHUNKS = {"z": 8, "y": 16, "x": 16}
SHARDS = {"z": 16, "y": 32, "x": 32}


def _volume(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(29)
    if dtype == "float32":
        return rng.normal(100, 30, SHAPE).astype(dtype)
    return rng.integers(0, 7 if dtype == "uint8" else 4000, SHAPE).astype(dtype)


def _export(volume, out, method, shards=None, levels=3):
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(out),
        chunks=CHUNKS,
        shards=shards,
        levels=levels,
        downsample=method,
    )
    source = le.open_source(volume, axes="zyx")
    plan = le.plan(source, settings, memory_limit="64MiB")
    le.run.execute(plan)
    return plan, [np.asarray(zarr.open_array(str(out / str(k)))[...]) for k in range(levels)]


CASES = [  # every method and dtype, with and without shards
    ("mean", "uint8", None),
    ("mean", "uint16", SHARDS),
    ("mean", "float32", None),
    ("mode", "uint8", SHARDS),
    ("mode", "uint16", None),
    ("nearest", "float32", SHARDS),
    ("nearest", "uint16", None),
]


@pytest.mark.parametrize(
    "method,dtype,shards", CASES, ids=lambda v: "shards" if isinstance(v, dict) else str(v)
)
def test_same_pass_levels_equal_the_old_paths_and_level_0_is_not_read_back(
    tmp_path, monkeypatch, method, dtype, shards
):
    volume = _volume(dtype)
    with monkeypatch.context() as old:  # the old path: no block steps, level 1 after the blocks
        old.setattr(OmeZarrWriter, "block_steps", lambda self, spec: ())
        before = built_from(old)
        plan, expected = _export(volume, tmp_path / "old.ome.zarr", method, shards)
        assert "made after the blocks" in str(plan)
        assert before == ["0", "1"]
    read = built_from(monkeypatch)
    plan, got = _export(volume, tmp_path / "new.ome.zarr", method, shards)
    assert "1: (19, 35, 34)" in str(plan) and "made in the same pass as level 0" in str(plan)
    assert read == ["1"]  # level 0 is not read back; level 2 is built from level 1
    for level, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), level


def test_gaussian_keeps_the_old_path_and_the_plan_says_so(tmp_path, monkeypatch):
    read = built_from(monkeypatch)
    plan, _ = _export(_volume("uint16"), tmp_path / "o.ome.zarr", "gaussian", levels=2)
    assert read == ["0"]
    (level_1,) = [a for a in plan.summary()["arrays"] if a["path"] == "1"]
    assert level_1["made"] == "after the blocks"
    assert OmeZarrWriter().block_steps(plan.spec) == ()


def test_blocks_cover_whole_level_1_shards(tmp_path):
    """Each block starts at a multiple of level 1's factor times its shard (none written by two
    tasks): a level-1 shard covers a level-0 shard's region, so whole level-0 shards do."""
    volume = _volume("uint16")
    plan, _ = _export(volume, tmp_path / "o.ome.zarr", "mean", SHARDS, levels=2)
    layouts = plan.writer.arrays(plan.spec)
    assert layouts[0].shards == (16, 32, 32) and layouts[1].shards == (8, 16, 16)
    for edges, step in zip(plan.edges, (16, 32, 32)):
        assert all(e % step == 0 for e in edges[:-1])


def test_progress_stays_below_one_until_the_commit_with_nothing_left_to_finish(tmp_path):
    """Two levels made in the same pass: nothing is read back, yet the fraction reaches 1.0 only
    at the commit."""
    out = tmp_path / "o.ome.zarr"
    seen: list[tuple[float, bool]] = []
    settings = le.ExportSettings(format="ome-zarr", output=str(out), chunks=CHUNKS, levels=2)
    source = le.open_source(_volume("uint16"), axes="zyx")
    le.export(source, settings, progress=lambda e: seen.append((e.fraction, out.exists())))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions.count(1.0) == 1
    assert all(f < 1 and not exists for f, exists in seen[:-1]) and seen[-1] == (1.0, True)


def test_a_block_cap_below_the_aligned_block_allows_the_smallest_aligned_block(monkeypatch):
    planning = importlib.import_module("lazyexport.plan")  # (le.plan is the function)
    monkeypatch.setattr(planning, "MAX_BLOCK_BYTES", 2**10)  # smaller than a chunk
    plan = le.plan(
        le.open_source(_volume("uint16"), axes="zyx"),
        le.ExportSettings(
            format="ome-zarr", output="o.ome.zarr", chunks=CHUNKS, levels=2, shards="none"
        ),
        memory_limit="64MiB",
    )
    assert plan.block == (16, 32, 32)  # two chunks along each halved axis
    assert "made in the same pass as level 0" in str(plan)


def test_a_level_1_piece_is_written_by_the_block_task_on_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("lazyexport.plan"), "MAX_BLOCK_BYTES", 2**10)
    volume = _volume("uint16")
    out = tmp_path / "o.ome.zarr"
    settings = le.ExportSettings(
        format="ome-zarr", output=str(out), chunks=CHUNKS, levels=2, shards="none"
    )
    source = le.open_source(volume, axes="zyx")
    plan = le.plan(source, settings, memory_limit="64MiB", threads=2)
    assert plan.nblocks == 27 and "same pass" in str(plan)  # blocks of (16, 32, 32)
    le.run.execute(plan, scheduler="processes")
    level_1 = np.asarray(zarr.open_array(str(out / "1"))[...])
    expected = ome_zarr.downsample(volume, (2, 2, 2), "mean")
    assert level_1.tobytes() == expected.tobytes()


PEAK = """
import json, sys
import lazyexport as le
from lazyexport.demo import smooth_volume
output, budget = sys.argv[1:]
source = le.open_source(smooth_volume((64, 512, 512), (64, 64, 64)), axes="zyx")
settings = le.ExportSettings(format="ome-zarr", output=output, levels=2, dtype="uint16",
                             renormalize=((0, 1), (0, 4000)))
plan = le.plan(source, settings, memory_limit=budget)
le.run.execute(plan)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak": int(hwm.split()[1]) * 1024, "projected": plan.costs.projected_peak,
                  "baseline": plan.costs.baseline, "plan": str(plan)}))
"""


def test_a_same_pass_export_peaks_within_its_projection(tmp_path):
    budget = 24 * 2**20
    found = run_json(PEAK, str(tmp_path / "o.ome.zarr"), str(budget))
    assert "made in the same pass as level 0" in found["plan"], found["plan"]
    assert found["projected"] <= found["baseline"] + budget
    # within the tolerance of the memory tests (tests/test_memory_layouts.py): the level-1 piece
    # and its work are counted (without them the old path's blocks were half as large)
    assert found["peak"] - found["baseline"] <= 1.25 * budget, found
    assert found["peak"] / found["projected"] <= 1.25, found
