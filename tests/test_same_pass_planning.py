"""The same pass is the planner's decision, priced before it is taken: blocks chosen at the
writer's block steps are priced with the level-1 work (Writer.block_work) and only those make
level 1 in the block tasks; where no such block fits, the fallback is priced without it and
level 1 is built after the blocks (an export that fits without the same pass is not refused).
The block-size variables are read in one line or refused (exit 2)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np

import lazyexport as le
from helpers import cli_env

CHUNKS = {"z": 32, "y": 128, "x": 128}
SHARDS = {"z": 64, "y": 512, "x": 512}


def _plan(tmp_path, method: str, memory: str):
    src = le.open_source(np.zeros((64, 1024, 1024), "uint16"), axes="zyx")
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(tmp_path / "o.ome.zarr"),
        levels=2,
        downsample=method,
        chunks=CHUNKS,
        shards=SHARDS,
    )
    return le.plan(src, settings, memory_limit=memory)


def _level_one(plan) -> str:
    return next(line for line in str(plan).splitlines() if "level      1:" in line)


def test_mode_falls_back_to_after_the_blocks_where_the_same_pass_does_not_fit(tmp_path):
    # the only block is one level-0 shard, aligned to level 1; mode's in-task work does not fit
    plan = _plan(tmp_path, "mode", "150MiB")
    assert _level_one(plan).endswith("made after the blocks")
    assert not plan.spec.stepped
    assert not plan.writer.same_pass(plan.spec)
    assert plan.costs.projected_peak - plan.costs.baseline <= 150 * 2**20


def test_the_same_pass_where_it_fits_is_priced(tmp_path):
    plan = _plan(tmp_path, "mean", "150MiB")
    assert _level_one(plan).endswith("made in the same pass as level 0")
    assert plan.spec.stepped and plan.writer.same_pass(plan.spec)
    work = plan.writer.block_work(plan.spec, plan.costs.block)
    assert work > 0 and plan.costs.encode >= work


def test_unpriced_blocks_never_make_level_one_in_the_tasks(tmp_path):
    plan = _plan(tmp_path, "mean", "150MiB")
    unpriced = dataclasses.replace(plan.spec, stepped=False)
    assert plan.writer.same_pass(plan.spec) and not plan.writer.same_pass(unpriced)


def test_block_work_counts_a_block_whatever_its_length(tmp_path):
    # a grid 0, phase, n has blocks whose length is not a multiple of the step: still priced
    plan = _plan(tmp_path, "mode", "1GiB")
    steps = plan.writer.block_steps(plan.spec)
    odd = tuple(s + s // 2 for s in steps)
    assert plan.writer.block_work(plan.spec, odd) > plan.writer.block_work(plan.spec, steps) > 0


def _run_plan(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    np.save(tmp_path / "a.npy", np.zeros((4, 8, 8), "uint8"))
    args = ["export", str(tmp_path / "a.npy"), "--format", "zarr"]
    args += ["--output", str(tmp_path / "o.zarr"), "--plan"]
    return subprocess.run(
        [sys.executable, "-m", "lazyexport", *args],
        capture_output=True,
        text=True,
        env={**cli_env(), **env},
        timeout=120,
    )


def test_block_size_variables_refused_in_one_line(tmp_path):
    for name in ("LAZYEXPORT_BLOCK_TARGET", "LAZYEXPORT_MAX_BLOCK_BYTES"):
        for bad in ("abc", "-5MiB"):
            done = _run_plan({name: bad}, tmp_path)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0]
    assert _run_plan({"LAZYEXPORT_BLOCK_TARGET": "0"}, tmp_path).returncode == 0
