"""The cost of an export at URLs in ``--plan``: the requests, bytes and objects the plan
projects (:mod:`lazyexport.plan_requests`) against what an S3 server (moto) counted for the same
export, for every format that writes to URLs (chunked stores, a staged file, a staged sequence,
a file uploaded in parts) and a source read from S3; the command line's ``requests`` line, its
JSON and ``--assume-throughput``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import lazyexport as le
from helpers import make_data, write_zarr3
from helpers.objstore import s3_bucket
from helpers.request_counts import counting
from lazyexport import cli
from lazyexport.plan_requests import Transfer, transfer
from lazyexport.settings import ExportSettings

CHUNKS = {"z": 8, "y": 64, "x": 64}
SHAPE = (32, 256, 256)  # uint16: 4 MiB in 64 chunks of CHUNKS
TOLERANCE = 0.10

CASES: dict[str, tuple[dict[str, Any], str, bool]] = {  # -> (settings, output, source at S3)
    "zarr": ({"format": "zarr", "chunks": CHUNKS}, "o.zarr", False),
    "zarr-sharded": (
        {"format": "zarr", "chunks": CHUNKS, "shards": {"z": 16, "y": 128, "x": 128}},
        "s.zarr",
        False,
    ),
    "ome-zarr": ({"format": "ome-zarr", "chunks": CHUNKS, "levels": 3}, "o.ome.zarr", False),
    "hdf5": ({"format": "hdf5"}, "o.h5", False),
    "tiff-sequence": ({"format": "tiff-sequence"}, "seq/s_{slice_index}.tif", False),
    "zarr-from-s3": ({"format": "zarr", "chunks": CHUNKS}, "r.zarr", True),
    "hdf5-from-s3": ({"format": "hdf5"}, "r.h5", True),
}


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lzc") as server:
        yield server


@pytest.fixture(scope="module")
def source(s3, tmp_path_factory) -> tuple[Path, str]:
    """The volume in a local Zarr store and the same store uploaded to S3."""
    path = write_zarr3(
        tmp_path_factory.mktemp("cost") / "src.zarr", make_data("uint16", SHAPE), chunks=(8, 64, 64)
    ).file
    s3.upload_tree(path, "lzc", "in/src.zarr")
    return path, "s3://lzc/in/src.zarr"


def _near(projected: int, counted: int) -> bool:
    return abs(projected - counted) <= TOLERANCE * counted


@pytest.mark.parametrize("case", CASES)
def test_the_projected_requests_are_within_ten_percent_of_what_the_server_counted(s3, source, case):
    options, name, remote = CASES[case]
    prefix = f"cost-{case}"
    src = source[1] if remote else str(source[0])
    settings = ExportSettings(output=f"s3://lzc/{prefix}/{name}", **options)
    projected = transfer(le.plan(src, settings))
    assert isinstance(projected, Transfer)
    with counting(s3) as counted:
        le.export(src, settings)
    gets, puts = counted.methods["GET"], counted.methods["PUT"]
    assert _near(projected.gets, gets), (projected, counted.methods)
    assert _near(projected.puts, puts), (projected, counted.methods)
    assert _near(projected.written, counted.sent), (projected.written, counted.sent)
    if projected.read:  # a source at S3, or pyramid levels read back
        assert _near(projected.read, counted.received), (projected.read, counted.received)
    assert projected.objects == len(s3.keys("lzc", f"{prefix}/"))
    assert projected.seconds > 0


def test_a_file_larger_than_a_part_is_projected_as_a_multipart_upload(s3, tmp_path):
    src = write_zarr3(
        tmp_path / "big.zarr", make_data("uint16", (24, 512, 512)), chunks=(8, 256, 256)
    ).file  # 12 MiB: three parts
    settings = ExportSettings(output="s3://lzc/multipart/b.h5")
    projected = transfer(le.plan(str(src), settings))
    assert projected is not None and projected.puts == 3
    with counting(s3) as counted:
        le.export(str(src), settings)
    assert counted.methods["PUT"] == projected.puts and counted.methods["POST"] == 2
    assert _near(projected.written, counted.sent)


def test_a_local_export_has_no_request_cost(source, tmp_path):
    plan = le.plan(str(source[0]), ExportSettings(format="zarr", output=str(tmp_path / "o.zarr")))
    assert transfer(plan) is None


def _plan(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main(["export", *args, "--plan"])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_plan_shows_the_requests_and_the_duration_at_the_assumed_throughput(s3, source, capsys):
    args = [source[1], "--format", "zarr", "--chunks", "z=8,y=64,x=64"]
    args += ["--output", "s3://lzc/cli/o.zarr"]
    status, out, _ = _plan(capsys, *args)
    assert status == 0
    line = next(x for x in out.splitlines() if x.startswith("  requests"))
    assert "GET" in line and "PUT" in line and "at 200 MB/s per worker x 1 worker" in line
    status, out, _ = _plan(capsys, *args, "--json")
    default = json.loads(out)["requests"]
    status, out, _ = _plan(capsys, *args, "--json", "--assume-throughput", "100MB/s")
    slower = json.loads(out)["requests"]
    assert status == 0 and default["throughput_per_worker"] == 200 * 10**6
    assert slower["throughput_per_worker"] == 100 * 10**6
    moved = default["bytes_read"] + default["bytes_written"]  # by one worker, nothing staged
    assert default["projected_seconds"] == pytest.approx(moved / 200e6, abs=1e-3)
    assert slower["projected_seconds"] == pytest.approx(moved / 100e6, abs=1e-3)
    assert default["put_requests"] == 64 + 3 and default["objects_created"] == 65
    assert default["bytes_read"] == default["bytes_written"] == 2 * 32 * 256 * 256
    assert not s3.keys("lzc", "cli")  # a plan writes nothing


def test_an_unreadable_throughput_is_one_line_and_exit_2(source, capsys):
    status, out, err = _plan(
        capsys, source[1], "--output", "s3://lzc/x/o.zarr", "--assume-throughput", "fast"
    )
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: cannot read throughput 'fast'; write e.g. 200MB/s or 1GB/s"
    ]


def test_the_duration_is_shared_by_the_workers_of_a_cluster_plan(s3, source):
    from lazyexport.plan import Workers, build_plan

    settings = ExportSettings(format="zarr", chunks=CHUNKS, output="s3://lzc/workers/o.zarr")
    one = transfer(le.plan(source[1], settings), "100MB/s")
    room = Workers(count=3, threads=1, budget=256 * 2**20, baseline=0, memory_limit=0)
    three = transfer(build_plan(source[1], settings, workers=room, in_process=False), "100MB/s")
    assert one is not None and three is not None
    assert (one.workers, three.workers) == (1, 3)
    assert (three.gets, three.puts, three.written) == (one.gets, one.puts, one.written)
    assert three.seconds == pytest.approx(one.seconds / 3)
    assert one.seconds == pytest.approx((one.read + one.written) / 100e6)
