"""Zarr v3 sharding: many small chunks stored in few shard files, each written by one task."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import zarr

import lazyexport as le
from lazyexport.cli import main
from lazyexport.demo import sample_volume
from lazyexport.errors import SettingsError
from lazyexport.plan import build_plan

ROI = {"z": (3, 29), "y": (5, 250), "x": (7, 190)}  # starts inside source chunks on every axis
SMALL = {"z": 1, "y": 32, "x": 32}  # 1 KiB uint8 chunks: many small files unsharded


@pytest.fixture(scope="module")
def volume():
    return sample_volume(shape=(32, 256, 200), chunks=(8, 64, 64))


@pytest.fixture(scope="module")
def reference(volume):
    ref = volume.values[3:29, 5:250, 7:190].transpose(3, 0, 1, 2)
    return np.clip(np.rint(ref * np.float32(255)), 0, 255).astype(np.uint8)


def settings(output, **kw):
    return le.ExportSettings(
        format="zarr",
        output=str(output),
        roi=ROI,
        axis_order="czyx",
        dtype="uint8",
        renormalize=((0, 1), (0, 255)),
        chunks=SMALL,
        **kw,
    )


def test_explicit_shards_round_trip_through_tensorstore(tmp_path, volume, reference):
    import tensorstore as ts

    result = le.export(
        volume,
        settings(tmp_path / "out.zarr", shards={"z": 8, "y": 128, "x": 128}),
        memory_limit="64MiB",
    )
    arr = zarr.open_array(str(result.output), mode="r")
    assert arr.chunks == (2, 1, 32, 32)
    assert arr.shards == (2, 8, 128, 128)
    np.testing.assert_array_equal(arr[...], reference)
    # an independent reader of the sharding codec
    store = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(result.output)}}
    ).result()
    np.testing.assert_array_equal(store.read().result(), reference)
    # one file per shard, not per chunk
    files = [p for p in (result.output / "c").rglob("*") if p.is_file()]
    expected = math.ceil(26 / 8) * math.ceil(245 / 128) * math.ceil(183 / 128)
    assert len(files) == expected
    assert arr.nchunks == 2 // 2 * 26 * math.ceil(245 / 32) * math.ceil(183 / 32)


def test_blocks_cover_whole_shards(tmp_path, volume):
    plan = build_plan(
        volume,
        settings(tmp_path / "out.zarr", shards={"z": 4, "y": 64, "x": 64}),
        memory_limit="64MiB",
    )
    assert plan.shards == (2, 4, 64, 64)
    for lengths, shard in zip(plan.blocks, plan.shards):
        starts = np.cumsum((0,) + lengths[:-1])
        assert all(s % shard == 0 for s in starts)  # no shard is split between two tasks
    assert "in shards of (2, 4, 64, 64)" in str(plan)


def test_shard_lengths_round_up_to_whole_chunks_and_at_most_the_axis(tmp_path, volume):
    plan = build_plan(volume, settings(tmp_path / "out.zarr", shards={"y": 100, "x": 1000}))
    assert plan.chunks[2:] == (32, 32)
    assert plan.shards == (2, 1, 128, 192)  # 100 -> 4 chunks; 1000 -> the axis (183 -> 6 chunks)
    assert any(
        "rounded up to whole chunks of (2, 1, 32, 32), one shard across an axis at most" in n
        for n in plan.notes
    )


def test_auto_shards_are_one_block(tmp_path, volume, reference):
    s = settings(tmp_path / "out.zarr", shards="auto")
    plan = build_plan(volume, s, memory_limit="64MiB")
    result = le.export(volume, s, memory_limit="64MiB")
    assert zarr.open_array(str(result.output), mode="r").shards == plan.shards
    assert plan.shards is not None
    assert math.prod(plan.shards) > 64 * math.prod(plan.chunks)  # many chunks per shard
    assert tuple(max(c) for c in plan.blocks) == tuple(
        min(s, n) for s, n in zip(plan.shards, plan.shape)
    )
    np.testing.assert_array_equal(zarr.open_array(str(result.output), mode="r")[...], reference)


def test_large_shards_run_fewer_at_a_time_and_too_large_ones_are_refused(tmp_path, volume):
    big = {"z": 26, "y": 256, "x": 192}  # the whole cutout: one shard, one task
    plan = build_plan(
        volume, settings(tmp_path / "a.zarr", shards=big), memory_limit="64MiB", threads=8
    )
    assert plan.nblocks == 1 and plan.in_flight == 1
    assert plan.costs is not None
    assert plan.in_flight * plan.costs.task_peak <= 64 * 2**20
    # kept as float32 (20 MiB), the shard alone and its encoded copy cannot fit 16 MiB
    as_float = settings(tmp_path / "b.zarr", shards=big).replace(dtype=None, renormalize=None)
    with pytest.raises(
        SettingsError, match=r"shards of .* more than the memory limit 16.00 MiB; .* at least"
    ):
        build_plan(volume, as_float, memory_limit="16MiB")
    roomy = build_plan(volume, as_float, memory_limit="80MiB")
    assert roomy.costs is not None
    assert roomy.costs.task_peak <= 80 * 2**20


def test_auto_shards_follow_the_unsharded_blocks_and_never_refuse(tmp_path, volume):
    big = le.ExportSettings(
        format="zarr", output=str(tmp_path / "a.zarr"), chunks={"z": 32, "y": 256, "x": 200}
    )
    unsharded = build_plan(
        volume, big, memory_limit="64MiB"
    )  # one 13 MiB chunk: over a block's budget
    auto = build_plan(volume, big.replace(shards="auto"), memory_limit="64MiB")
    assert (
        auto.shards is None
        and auto.blocks == unsharded.blocks
        and auto.in_flight == unsharded.in_flight
    )
    assert any("not sharded" in n for n in auto.notes)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(format="hdf5", output="x.h5"),
            r"shards \(--shards: Zarr v3 sharding\) does not apply to format hdf5, only to "
            "ome-zarr, zarr",
        ),
        (dict(zarr_format=2), "Zarr v2 has no sharding"),
        (dict(shards="some"), "'auto' or map axis letters"),
        (dict(shards={"z": 0}), "shard length for axis 'z' must be a positive"),
        (dict(shards={}), "at least one axis"),
        (dict(shards={"zy": 4}), "one letter each"),
        (dict(shards={"z": 4, "Z": 8}), "given twice"),
    ],
)
def test_bad_shard_settings(change, message):
    base = dict(format="zarr", output="x.zarr", shards={"z": 4})
    with pytest.raises(SettingsError, match=message):
        le.ExportSettings(**{**base, **change})


def test_shards_on_an_axis_the_output_lacks(tmp_path, volume):
    with pytest.raises(SettingsError, match="shards name axes t"):
        build_plan(volume, settings(tmp_path / "out.zarr", shards={"t": 4}))


def test_cancelled_sharded_export_resumes_to_the_same_result(
    tmp_path, volume, reference, small_blocks
):
    cancel = threading.Event()
    s = settings(tmp_path / "out.zarr", shards={"z": 2, "y": 128, "x": 128})

    def progress(event):
        if event.blocks_done >= 3:
            cancel.set()

    with pytest.raises(le.ExportError, match="cancelled"):
        le.export(volume, s, memory_limit="16MiB", progress=progress, cancel=cancel, resume=True)
    assert not (tmp_path / "out.zarr").exists()
    le.export(volume, s, memory_limit="16MiB", resume=True)
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...], reference
    )


def test_cli_shards(tmp_path, volume, capsys):
    src = tmp_path / "src.zarr"
    zarr.create_array(str(src), data=volume.values[..., 0], chunks=(8, 64, 64))
    out = tmp_path / "out.zarr"
    code = main(
        [
            "export",
            str(src),
            "--format",
            "zarr",
            "--output",
            str(out),
            "--chunks",
            "z=1,y=32,x=32",
            "--shards",
            "z=16,y=128,x=128",
            "--quiet",
        ]
    )
    assert code == 0
    arr = zarr.open_array(str(out), mode="r")
    assert arr.shards == (16, 128, 128)
    np.testing.assert_array_equal(arr[...], volume.values[..., 0])
    capsys.readouterr()
    for bad, message in [
        (["--format", "hdf5", "--shards", "auto"], "does not apply to format hdf5"),
        (["--format", "zarr", "--shards", ""], "at least one axis"),
        (["--format", "zarr", "--shards", "zy=4"], "one letter each"),
        (["--format", "zarr", "--shards", "z=4,z=8"], "gives axis 'z' twice"),
    ]:
        code = main(["export", str(src), "--output", str(tmp_path / "bad.out"), *bad])
        err = capsys.readouterr().err
        assert code == 2, bad
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad.out").exists()


def test_a_sharded_source_exports_like_its_data(tmp_path, volume):
    data = (volume.values[..., 0] * 1000).astype("uint16")
    zarr.create_array(
        str(tmp_path / "src.zarr"),
        data=data,
        chunks=(4, 32, 32),
        shards=(8, 128, 128),
        dimension_names=["z", "y", "x"],
    )
    result = le.export(
        str(tmp_path / "src.zarr"),
        le.ExportSettings(
            format="zarr", output=str(tmp_path / "out.zarr"), roi={"z": (3, 29), "y": (5, 250)}
        ),
    )
    np.testing.assert_array_equal(
        zarr.open_array(str(result.output), mode="r")[...], data[3:29, 5:250]
    )


@pytest.mark.slow
def test_reading_many_shards_keeps_one_file_open_at_a_time(tmp_path):
    import resource

    data = np.arange(64 * 256 * 256, dtype=np.uint32).reshape(64, 256, 256)
    zarr.create_array(
        str(tmp_path / "many.zarr"), data=data, chunks=(2, 16, 16), shards=(4, 16, 16)
    )  # 4096 shards
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        src = le.open_source(str(tmp_path / "many.zarr"))
        np.testing.assert_array_equal(
            src.data[:, :, :].compute(scheduler="sync"), data
        )  # blocks over many shards
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
