"""The planner's cost model against what exports really do: decoded source chunks (read
amplification), refusals of what cannot fit, staging only when needed, the plan printed and
as JSON, measured peak memory next to the projection, and streamed execution at scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers import cancel_a_huge_export
from lazyexport import chunkio, run
from lazyexport.errors import MemoryLimitError
from lazyexport.plan import build_plan

CLI = [sys.executable, "-m", "lazyexport"]


def counting_zarr(tmp_path: Path, shape, chunks, dtype="float32") -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(1).random(shape).astype(dtype)
    path = tmp_path / "src.zarr"
    arr = zarr.create_array(
        str(path),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        dimension_names=list("zyx")[-len(shape) :],
    )
    arr[...] = data
    return path, data


@pytest.mark.parametrize("fmt", ["zarr", "hdf5", "tiff-sequence", "n5"])
def test_a_mid_chunk_cutout_decodes_each_source_chunk_once(tmp_path, monkeypatch, fmt):
    """The amplification the plan states is what the export does: every decoded chunk is
    counted (the chunk reader's one place that reads a chunk file)."""
    path, data = counting_zarr(tmp_path, (48, 160, 160), (16, 32, 32))
    decoded = []
    original = chunkio.ChunkFiles._load

    def load(self, index, out=None):
        decoded.append(index)
        return original(self, index, out)

    monkeypatch.setattr(chunkio.ChunkFiles, "_load", load)
    roi = {"z": (0, 48), "y": (7, 150), "x": (13, 147)}  # starts inside chunks in y and x
    out = tmp_path / ("o_{slice_index}" if fmt == "tiff-sequence" else "o")
    settings = le.ExportSettings(format=fmt, roi=roi, output=str(out))
    plan = build_plan(str(path), settings, memory_limit="64MiB")
    needed_chunks = (
        3 * len(range(7 // 32, (150 - 1) // 32 + 1)) * len(range(13 // 32, (147 - 1) // 32 + 1))
    )
    result = le.export(str(path), settings, memory_limit="64MiB")
    counted = len(decoded) * 16 * 32 * 32 * 4
    assert len(decoded) >= needed_chunks
    assert plan.costs is not None
    assert plan.costs.decoded == counted  # the model counts what is decoded
    assert plan.costs.amplification <= 1.05
    assert len(decoded) == needed_chunks  # each chunk once
    back = np.asarray(le.open_exported(result))
    np.testing.assert_array_equal(back.reshape(48, 143, 134), data[:, 7:150, 13:147])


@pytest.mark.parametrize("fmt", ["zarr", "hdf5", "n5"])
def test_chunks_that_straddle_blocks_are_decoded_once_and_shared(tmp_path, monkeypatch, fmt):
    """Blocks are whole output chunks, whose grid starts at the cutout's start, inside source
    chunks: a source chunk on a block edge is needed by two blocks. Run as threads, the first
    reads it whole and keeps it for the other; in other processes it would be decoded twice."""
    path, data = counting_zarr(tmp_path, (48, 160, 160), (16, 32, 32))
    decoded = []
    original = chunkio.ChunkFiles._load

    def load(self, index, out=None):
        decoded.append(index)
        return original(self, index, out)

    monkeypatch.setattr(chunkio.ChunkFiles, "_load", load)
    roi = {"z": (3, 45), "y": (7, 150), "x": (13, 147)}
    settings = le.ExportSettings(
        format=fmt, roi=roi, output=str(tmp_path / "o"), chunks={"z": 8, "y": 16, "x": 16}
    )
    plan = build_plan(str(path), settings, memory_limit="16MiB")
    apart = run.plan_on("processes", str(path), settings, memory_limit="16MiB")
    assert plan.costs is not None
    assert plan.nblocks > 1 and plan.costs.shared > 0  # blocks edges inside source chunks
    assert apart.costs is not None
    assert (
        not apart.in_process and apart.costs.amplification > 1.05
    )  # ... which processes would decode twice
    assert plan.costs.amplification == 1.0
    result = le.export(str(path), settings, memory_limit="16MiB")
    assert sorted(decoded) == sorted(set(decoded)) and len(decoded) == 3 * 5 * 5  # every chunk once
    assert plan.costs.decoded == len(decoded) * 16 * 32 * 32 * 4
    np.testing.assert_array_equal(
        np.asarray(le.open_exported(result)).reshape(42, 143, 134), data[3:45, 7:150, 13:147]
    )


def test_shared_reads_are_dropped_after_their_last_block_and_read_again_when_a_reader_failed():
    from lazyexport.blocks import SharedReads

    edges = {"y": (0, 10, 20, 30), "x": (0, 50)}
    shared = SharedReads(("y", "x"), edges, skip={(2, 0)})
    region = ((5, 25), (0, 50))  # overlaps blocks 0, 1 and 2 (2 is done already)
    assert shared.users(region) == 2
    loads = []

    def load():
        loads.append(1)
        return np.ones(3)

    shared.get(region, load)
    assert len(shared) == 1  # kept for the second block
    shared.get(region, load)
    assert len(shared) == 0 and len(loads) == 1  # read once, dropped after its last block

    def fail():
        raise OSError("unreadable")

    with pytest.raises(OSError):
        shared.get(region, fail)
    assert len(shared) == 0  # nothing half-read is kept
    assert shared.get(region, lambda: np.zeros(2)).tolist() == [0, 0]


def test_a_source_chunk_larger_than_the_budget_is_refused_in_one_line_with_the_limit_that_works():
    big = da.zeros((4, 2048, 2048), dtype="float32", chunks=(4, 2048, 2048))  # one 64 MiB chunk
    settings = le.ExportSettings(format="zarr", output="never.zarr", dtype="uint8")
    with pytest.raises(MemoryLimitError) as info:
        build_plan(le.open_source(big, axes="zyx"), settings, memory_limit="32MiB")
    message = str(info.value)
    assert "\n" not in message
    assert "(4, 2048, 2048) float32 decodes to 64.00 MiB" in message
    needed = message.split("the smallest memory limit that works is ")[1].split(" ")[0:2]
    plan = build_plan(
        le.open_source(big, axes="zyx"), settings, memory_limit=" ".join(needed).replace(" ", "")
    )
    assert plan.in_flight == 1
    assert plan.costs is not None
    assert plan.costs.task_peak <= plan.memory_limit


def test_user_chunks_larger_than_the_budget_allows_are_refused_not_exceeded(tmp_path):
    src = le.open_source(np.zeros((64, 1024, 1024), dtype="float32"), axes="zyx")
    settings = le.ExportSettings(
        format="zarr", output=str(tmp_path / "o.zarr"), chunks={"z": 64, "y": 1024, "x": 1024}
    )
    with pytest.raises(
        MemoryLimitError,
        match=r"chunks of \(64, 1024, 1024\) need about .* more than the memory "
        r"limit 64.00 MiB; choose smaller chunks, or a memory limit of at least",
    ):
        build_plan(src, settings, memory_limit="64MiB")


def test_sequences_stage_only_when_the_slab_of_one_source_chunk_does_not_fit(tmp_path):
    data = da.ones((64, 512, 512), dtype="uint16", chunks=(32, 64, 64))  # slab of 32 slices: 16 MiB
    src = le.open_source(data, axes="zyx")
    settings = le.ExportSettings(
        format="tiff-sequence", output=str(tmp_path / "s_{slice_index}.tif")
    )
    roomy = build_plan(src, settings, memory_limit="256MiB")
    assert roomy.costs is not None
    assert not roomy.staged and roomy.costs.amplification == 1.0
    assert set(roomy.blocks[0]) == {32}  # slabs follow the source's chunks
    tight = build_plan(src, settings, memory_limit="16MiB")
    assert tight.costs is not None
    assert tight.staged and tight.costs.amplification == 1.0
    assert any("staging file" in n for n in tight.notes)
    result = le.export(src, settings, memory_limit="16MiB")
    assert len(result.paths) == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging file left


def test_a_mid_chunk_slice_sequence_writes_slabs_that_follow_the_source(tmp_path):
    data = np.arange(40 * 30 * 20, dtype="uint16").reshape(40, 30, 20)
    src = le.open_source(da.from_array(data, chunks=(8, 30, 20)), axes="zyx")
    settings = le.ExportSettings(
        format="tiff-sequence", roi={"z": (3, 37)}, output=str(tmp_path / "s_{slice_index}.tif")
    )
    plan = build_plan(src, settings, memory_limit="64MiB")
    assert plan.costs is not None
    assert not plan.staged and plan.costs.amplification == 1.0
    assert plan.blocks[0][0] == 5  # up to the first chunk edge (z=8)
    result = le.export(src, settings, memory_limit="64MiB")
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), data[3:37])


ALL_FORMATS = ["zarr", "hdf5", "n5", "ome-zarr", "tiff", "tiff-sequence", "png-sequence", "npy"]


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_plan_prints_and_writes_nothing_and_its_json_matches_the_real_run(tmp_path, fmt):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((40, 256, 256)).astype("float32"))
    output = str(tmp_path / ("out_{slice_index}" if fmt.endswith("sequence") else "out"))
    args = [
        "export",
        str(tmp_path / "a.npy"),
        "--format",
        fmt,
        "--output",
        output,
        "--roi",
        "z=3:37",
        "--renormalize",
        "0,1:0,255",
        "--dtype",
        "uint8",
        "--memory-limit",
        "16MiB",
    ]
    text = subprocess.run(
        [*CLI, *args, "--plan"], capture_output=True, text=True, check=True
    ).stdout
    assert "projected peak" in text and "read amplification" in text and "tasks" in text
    shown = json.loads(
        subprocess.run(
            [*CLI, *args, "--plan", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]  # nothing written
    assert shown["shape"] == [34, 256, 256] and shown["format"] == fmt
    for key in (
        "block",
        "tasks",
        "tasks_in_flight",
        "projected_peak",
        "projected",
        "read_amplification",
        "staged",
    ):
        assert key in shown
    events: list[run.Progress] = []
    plan = build_plan(
        str(tmp_path / "a.npy"),
        le.ExportSettings(
            format=fmt,
            output=output,
            roi={"z": (3, 37)},
            renormalize=((0, 1), (0, 255)),
            dtype="uint8",
        ),
        memory_limit="16MiB",
    )
    assert plan.summary()["tasks"] == shown["tasks"] and list(plan.block) == shown["block"]
    result = le.run.execute(plan, progress=events.append)
    assert len(events) == shown["tasks"] == plan.nblocks
    assert plan.costs is not None
    assert result.projected_peak == plan.costs.projected_peak
    assert result.peak_memory > 0


def test_batch_export_all_plan_lists_every_dataset(tmp_path):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((4, 32, 32), dtype="uint8"))
    project = tmp_path / "p.toml"
    project.write_text(
        '[settings]\nformat = "zarr"\n\n'
        '[[datasets]]\nsource = "a.npy"\n\n'
        '[[datasets]]\nsource = "b.npy"\n'
    )
    out = subprocess.run(
        [*CLI, "batch", str(project), "export-all", "--plan", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    shown = json.loads(out)
    assert [s["nickname"] for s in shown] == ["a", "b"]
    assert not list(tmp_path.glob("*.zarr"))


CHILD = """
import json, sys, lazyexport as le
import dask.array as da
data = da.random.random((96, 1024, 1024), chunks=(32, 256, 256)).astype("float32")
src = le.open_source(data, axes="zyx")
s = le.ExportSettings(
    format=sys.argv[1], output=sys.argv[2], renormalize=((0, 1), (0, 255)), dtype="uint8"
)
r = le.export(src, s, memory_limit="128MiB")
print(json.dumps({"peak": r.peak_memory, "projected": r.projected_peak}))
"""


@pytest.mark.parametrize("fmt", ["zarr", "tiff-sequence"])
def test_the_projected_peak_is_within_a_quarter_of_the_measured_one(tmp_path, fmt):
    out = str(tmp_path / ("o_{slice_index}" if fmt == "tiff-sequence" else "o"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, fmt, out], capture_output=True, text=True, check=True
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.75 <= figures["peak"] / figures["projected"] <= 1.25, figures


def test_a_huge_volume_writes_its_first_block_within_seconds_and_cancels_at_once(tmp_path):
    """Streamed execution: nothing is listed per block before the first write."""
    first, stop = cancel_a_huge_export(tmp_path, memory_limit="512MiB")
    assert first < 10
    assert stop < 5


def test_the_plan_is_a_frozen_value_that_execution_does_not_change(tmp_path):
    import dataclasses

    data = np.arange(8 * 64 * 64, dtype="uint16").reshape(8, 64, 64)
    plan = le.plan(
        data, le.ExportSettings(format="zarr", output=str(tmp_path / "o")), memory_limit="16MiB"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.chunks = (1, 1, 1)  # type: ignore[misc]
    before = plan.summary()
    result = le.run.execute(plan, resume=True, scheduler="threads")
    assert plan.summary() == before
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), data)
