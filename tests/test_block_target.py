"""Blocks aim at BLOCK_TARGET_BYTES (32 MiB): a larger budget leaves the plan as it is, and a
block grows past the target only where that saves decoding (one-plane source chunks).

Plans only: the sources are empty Zarr arrays (no chunk written), so nothing large is read."""

from __future__ import annotations

import importlib
import math

import pytest
import zarr

import lazyexport as le

MiB = 2**20
plan_module = importlib.import_module("lazyexport.plan")


def _source(path, chunks):
    zarr.create_array(str(path), shape=(256, 1024, 1024), chunks=chunks, dtype="uint16")
    return le.open_source(str(path), axes="zyx")


def _plan(src, tmp_path, budget, fmt="zarr"):
    settings = le.ExportSettings(
        format=fmt, output=str(tmp_path / "out.zarr"), chunks={"z": 64, "y": 64, "x": 64}
    )
    return le.plan(src, settings, memory_limit=budget, threads=2)


def _block_bytes(plan) -> int:
    return math.prod(plan.costs.block) * plan.dtype.itemsize


@pytest.fixture
def target(monkeypatch):
    monkeypatch.setattr(plan_module, "MAX_BLOCK_BYTES", 2**30)
    monkeypatch.setattr(plan_module, "BLOCK_TARGET_BYTES", 32 * MiB)


def test_cube_chunks_stay_at_the_target_whatever_the_budget(target, tmp_path):
    src = _source(tmp_path / "cube.zarr", (64, 256, 256))
    plans = [_plan(src, tmp_path, f"{g}GiB") for g in (1, 2, 4)]
    assert _block_bytes(plans[0]) <= 32 * MiB
    # a larger budget buys nothing here: the same blocks, the same tasks in flight
    assert {(p.costs.block, p.costs.in_flight) for p in plans} == {
        (plans[0].costs.block, plans[0].costs.in_flight)
    }
    assert plans[0].costs.amplification == 1.0


def test_without_a_target_the_budget_makes_larger_blocks(monkeypatch, tmp_path):
    monkeypatch.setattr(plan_module, "MAX_BLOCK_BYTES", 2**30)
    monkeypatch.setattr(plan_module, "BLOCK_TARGET_BYTES", 0)
    # (one-plane chunks: with chunks of 64 planes the copies of chunks that are not contiguous
    # in a larger block (cost.COPY_COST) keep it at 32 MiB even without a target)
    src = _source(tmp_path / "flat.zarr", (1, 1024, 1024))
    assert _block_bytes(_plan(src, tmp_path, "1GiB")) > _block_bytes(_plan(src, tmp_path, "256MiB"))


def test_plane_chunks_grow_past_the_target_to_decode_less(target, monkeypatch, tmp_path):
    src = _source(tmp_path / "flat.zarr", (1, 1024, 1024))
    plan = _plan(src, tmp_path, "1GiB")
    # held to 32 MiB, a 64-plane block would take a quarter of each plane: 4x decoding
    assert _block_bytes(plan) > 32 * MiB
    assert plan.costs.amplification < 4.0
    monkeypatch.setattr(plan_module, "BLOCK_TARGET_BYTES", 0)
    assert plan.costs.projected_peak < _plan(src, tmp_path, "1GiB").costs.projected_peak


def test_pyramid_blocks_follow_the_target(target):
    block = plan_module.block_shape((64, 64, 64), (512, 512, 512), 2, budget=2**30)
    assert math.prod(block) * 2 <= 32 * MiB
