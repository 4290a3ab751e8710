"""Sources and outputs at URLs: S3 (moto's server on loopback), plain HTTP (read-only), faults.

What is written to S3 is downloaded with boto3 (not lazyexport) and compared with the same export
written locally; sources are uploaded with boto3 and compared with the local file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers import ROOT, cli_env, make_data, run_cli, write_hdf5, write_zarr3
from helpers.objstore import FaultProxy, key_prefix, s3_bucket, serve_directory
from helpers.zarr_nodes import read_all
from lazyexport import remote
from lazyexport.errors import OutputBusyError, SourceError
from lazyexport.settings import ExportSettings
from lazyexport.storage import Run

SHAPE = (12, 40, 36)
CUT = {"z": (2, 11), "y": (3, 37)}


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lzx") as server:
        yield server


@pytest.fixture
def prefix(request) -> str:
    """A key prefix of the test's own in the bucket."""
    return key_prefix(request.node.name)


@pytest.fixture
def volume(tmp_path) -> tuple[np.ndarray, Path]:
    data = make_data("uint16", SHAPE)
    source = write_zarr3(tmp_path / "src.zarr", data, chunks=(4, 16, 16))
    return data, source.file


def _read(path: Path, fmt: str) -> dict[str, np.ndarray]:
    """Every array of an export on disk (OME-Zarr: every level), by name."""
    if fmt == "tiff-sequence":
        return {p.name: tifffile.imread(p) for p in sorted(path.glob("*.tif"))}
    if fmt == "hdf5":
        return {"data": le.open_exported(path).values}
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return {"": read_all(node)}
    return {name: read_all(arr) for name, arr in sorted(node.arrays())}  # level 0 first


OUTPUTS: dict[str, tuple[dict[str, Any], str]] = {  # format -> (settings, output name)
    "zarr": ({"format": "zarr"}, "out.zarr"),
    "zarr-sharded": ({"format": "zarr", "shards": {"z": 8}, "chunks": {"z": 2}}, "sh.zarr"),
    "ome-zarr": ({"format": "ome-zarr", "levels": 2}, "out.ome.zarr"),
    "hdf5": ({"format": "hdf5"}, "out.h5"),
    "tiff-sequence": ({"format": "tiff-sequence"}, "seq/s_{slice_index}.tif"),
}


@pytest.mark.parametrize("kind", OUTPUTS)
def test_an_export_to_s3_reads_back_identical_to_the_local_export(
    s3, prefix, volume, tmp_path, kind
):
    options, name = OUTPUTS[kind]
    data, source = volume
    local = le.export(
        source, ExportSettings(roi=CUT, output=str(tmp_path / "local" / name), **options)
    )
    url = f"s3://lzx/{prefix}/{name}"
    result = le.export(source, ExportSettings(roi=CUT, output=url, **options))
    assert str(result.output) == url.replace("{slice_index}", "02")
    assert all(str(p).startswith(f"s3://lzx/{prefix}/") for p in result.paths)
    keys = s3.keys("lzx", prefix)
    assert not [k for k in keys if ".lazyexport-" in k], keys  # nothing hidden left
    here = tmp_path / "down"
    s3.download_tree("lzx", prefix, here)
    got = _read(here / Path(name).parent if kind == "tiff-sequence" else here / name, kind)
    want = _read(
        local.paths[0].parent if kind == "tiff-sequence" else tmp_path / "local" / name, kind
    )
    assert got.keys() == want.keys() and len(got) >= 1
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    first = next(iter(want.values()))
    np.testing.assert_array_equal(
        first if kind != "tiff-sequence" else np.stack(list(want.values())),
        data[2:11, 3:37],
    )
    assert not Path("s3:").exists()  # the old bug: a local directory named after the scheme


@pytest.mark.parametrize("kind", ["zarr", "ome-zarr", "n5", "hdf5", "tiff"])
def test_a_source_on_s3_or_http_reads_identical_to_the_local_file(s3, prefix, tmp_path, kind):
    data = make_data("float32", SHAPE, seed=3)
    if kind == "zarr":
        path, inner = write_zarr3(tmp_path / "in.zarr", data, chunks=(4, 16, 16)).file, ""
    elif kind == "ome-zarr":
        made = le.export(
            data, ExportSettings(format="ome-zarr", output=str(tmp_path / "in.ome.zarr"))
        )
        path, inner = made.output, ""
    elif kind == "n5":
        made = le.export(data, ExportSettings(format="n5", output=str(tmp_path / "in.n5/g/raw")))
        path, inner = made.output, "/g/raw"
    elif kind == "hdf5":
        path, inner = write_hdf5(tmp_path / "in.h5", data).file, "/volume/raw"
    else:
        path, inner = tmp_path / "in.tif", ""
        tifffile.imwrite(path, data, tile=(16, 16))
    s3.upload_tree(path, "lzx", f"{prefix}/{path.name}")
    local = le.open_source(f"{path}{inner}")
    on_s3 = le.open_source(f"s3://lzx/{prefix}/{path.name}{inner}")
    assert on_s3.dims == local.dims and on_s3.attrs["nickname"] == local.attrs["nickname"]
    assert on_s3.attrs["dataset_dir"] == f"s3://lzx/{prefix}"
    np.testing.assert_array_equal(on_s3.values, local.values)
    with serve_directory(tmp_path) as base:
        on_http = le.open_source(f"{base}/{path.name}{inner}")
        np.testing.assert_array_equal(on_http[2:5, 7:30].values, local[2:5, 7:30].values)
        # exported from HTTP to S3: source and output both remote
        out = f"s3://lzx/{prefix}/from-http.zarr"
        le.export(f"{base}/{path.name}{inner}", ExportSettings(format="zarr", output=out))
    np.testing.assert_array_equal(le.open_source(out).values, local.values)


def test_exports_survive_ten_percent_of_requests_failing(s3, prefix, volume, tmp_path):
    data, source = volume
    proxy = FaultProxy(s3.endpoint, fail=0.10, seed=7)
    try:
        options = {"endpoint": proxy.endpoint, "max_retries": 20}
        for fmt, name in (("zarr", "f.zarr"), ("ome-zarr", "f.ome.zarr"), ("hdf5", "f.h5")):
            url = f"s3://lzx/{prefix}/{name}"
            result = le.export(
                source,
                ExportSettings(format=fmt, output=url, roi=CUT, chunks={"z": 1}),
                storage_options=options,
            )
            with remote.options(options):  # read through the faulty proxy too
                back = le.open_source(str(result.output))
                np.testing.assert_array_equal(back.values, data[2:11, 3:37])
        assert proxy.total > 100 and proxy.failed >= 0.05 * proxy.total, (
            proxy.failed,
            proxy.total,
        )
    finally:
        proxy.stop()
    assert not [k for k in s3.keys("lzx", prefix) if ".lazyexport-" in k]


def _one_error_line(done: subprocess.CompletedProcess, *expected: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "testing-secret" not in done.stderr + done.stdout  # never the credentials
    return lines[0]


@pytest.mark.slow
def test_bad_bucket_denied_access_and_a_bad_endpoint_fail_in_one_line(s3, volume, tmp_path):
    _, source = volume
    fast = ["--storage-option", "max_retries=1", "--storage-option", "retry_timeout=3"]
    done = run_cli("export", source, "--format", "zarr", "--output", "s3://no-such-bkt/o.zarr")
    _one_error_line(done, "s3://no-such-bkt/o.zarr", "no such bucket")
    done = run_cli("info", "s3://no-such-bkt/in.zarr")
    _one_error_line(done, "no such bucket")
    proxy = FaultProxy(s3.endpoint, fail=0, deny=True)
    try:
        done = run_cli(
            "export", source, "--format", "zarr", "--output", "s3://lzx/denied.zarr",
            "--storage-option", f"endpoint={proxy.endpoint}", *fast,
        )  # fmt: skip
        _one_error_line(done, "s3://lzx/denied.zarr", "access denied", "credentials")
    finally:
        proxy.stop()
    done = run_cli(
        "export", source, "--format", "hdf5", "--output", "s3://lzx/o.h5",
        "--storage-option", "endpoint=http://127.0.0.1:9", *fast,
    )  # fmt: skip
    _one_error_line(done, "s3://lzx/o.h5", "endpoint")
    done = run_cli("export", source, "--output", "s4://lzx/o.h5")
    _one_error_line(done, "unknown URL scheme s4://")
    assert not (tmp_path / "s4:").exists() and not Path("s4:").exists()


def test_an_existing_output_is_kept_without_overwrite_and_replaced_with_it(s3, prefix, volume, cli):
    data, source = volume
    url = f"s3://lzx/{prefix}/keep.zarr"
    le.export(source, ExportSettings(format="zarr", output=url, roi={"z": (0, 4)}))
    before = s3.keys("lzx", prefix)
    done = cli("export", source, "--format", "zarr", "--output", url)
    _one_error_line(done, "exists already", "--overwrite")
    assert s3.keys("lzx", prefix) == before
    done = cli("export", source, "--format", "zarr", "--output", url, "--overwrite", "-q")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(le.open_source(url).values, data)


def test_a_killed_export_leaves_no_visible_output_and_the_next_run_leaves_no_stray_keys(
    s3, prefix, tmp_path, small_blocks
):
    data = make_data("uint16", (48, 64, 64))
    source = write_zarr3(tmp_path / "big.zarr", data, chunks=(1, 64, 64)).file
    url = f"s3://lzx/{prefix}/killed.zarr"
    args: list[str | os.PathLike[str]] = [
        "export",
        source,
        "--format",
        "zarr",
        "--output",
        url,
        "--chunks",
        "z=1",
        "-q",
    ]
    slow = [
        sys.executable,
        str(ROOT / "tests" / "helpers" / "slow_cli.py"),
        tmp_path / "marker",
        "0.05",
    ]
    proc = subprocess.Popen([*map(str, slow), *map(str, args)], env=cli_env(), cwd=ROOT)
    deadline = time.monotonic() + 60
    while not [k for k in s3.keys("lzx", prefix) if "/c/" in k] and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    keys = s3.keys("lzx", prefix)
    assert [k for k in keys if "/c/" in k], "killed before any chunk was written"
    assert f"{prefix}/killed.zarr/zarr.json" not in keys  # not visible: no metadata in place
    with pytest.raises(SourceError):
        le.open_source(url)
    done = run_cli(*args)  # the next export of the same output cleans up first
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(le.open_source(url).values, data)
    keys = s3.keys("lzx", prefix)
    assert not [k for k in keys if ".lazyexport-" in k], keys
    assert all(k.startswith(f"{prefix}/killed.zarr/") for k in keys)


def test_a_killed_resume_export_continues_to_an_output_identical_to_a_clean_export(
    s3, prefix, tmp_path, small_blocks
):
    data = make_data("uint16", (40, 256, 512))  # 40 blocks of one 256 KiB slice
    source = write_zarr3(tmp_path / "big.zarr", data, chunks=(1, 256, 512)).file
    url = f"s3://lzx/{prefix}/resumed.zarr"
    args: list[str | os.PathLike[str]] = [
        "export",
        source,
        "--format",
        "zarr",
        "--output",
        url,
        "--chunks",
        "z=1",
    ]
    args += ["--resume", "-q"]
    marker = tmp_path / "marker"
    slow = [sys.executable, str(ROOT / "tests" / "helpers" / "slow_cli.py"), marker, "0.05"]
    proc = subprocess.Popen([*map(str, slow), *map(str, args)], env=cli_env(), cwd=ROOT)
    deadline = time.monotonic() + 60
    while (
        not marker.exists() or len(marker.read_text().splitlines()) < 10
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    keys = s3.keys("lzx", prefix)
    journal = [k for k in keys if ".lazyexport-r" in k and "/blocks/" in k]
    assert len(journal) >= 10, keys  # the finished blocks are listed in the store
    assert f"{prefix}/resumed.zarr/zarr.json" not in keys  # not visible yet
    marker.unlink()
    done = subprocess.run(
        [*map(str, slow), *map(str, args)], env=cli_env(), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rewritten = len(marker.read_text().splitlines())
    assert rewritten <= 40 - len(journal), (rewritten, len(journal))  # journaled blocks skipped
    clean = le.export(
        source,
        ExportSettings(format="zarr", output=str(tmp_path / "clean.zarr"), chunks={"z": 1}),
    )
    np.testing.assert_array_equal(le.open_source(url).values, le.open_exported(clean).values)
    np.testing.assert_array_equal(le.open_source(url).values, data)
    keys = s3.keys("lzx", prefix)
    assert not [k for k in keys if ".lazyexport-" in k], keys


def test_a_local_cluster_writes_blocks_straight_to_s3(s3, prefix, volume, tmp_path):
    data, source = volume
    s3.upload_tree(source, "lzx", f"{prefix}/src.zarr")
    url = f"s3://lzx/{prefix}/cluster.zarr"
    settings = ExportSettings(format="zarr", output=url, roi=CUT, chunks={"z": 1})
    result = le.export(f"s3://lzx/{prefix}/src.zarr", settings, scheduler="local-cluster")
    assert result.paths == [remote.UrlPath(url)]
    np.testing.assert_array_equal(le.open_source(url).values, data[2:11, 3:37])


def test_the_plan_and_messages_never_show_storage_options(s3, prefix, volume):
    _, source = volume
    done = run_cli(
        "export", source, "--format", "zarr", "--output", f"s3://lzx/{prefix}/p.zarr", "--plan",
        "--json", "--storage-option", "secret=very-secret-value",
        "--storage-option", "key=testing-key",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"s3://lzx/{prefix}/p.zarr" in done.stdout
    assert "very-secret-value" not in done.stdout + done.stderr
    assert not s3.keys("lzx", prefix)  # a plan writes nothing


def test_delete_all_removes_exactly_the_keys_the_project_wrote(s3, prefix, volume, tmp_path):
    data, source = volume
    other = f"{prefix}/keep/other.txt"
    s3.client().put_object(Bucket="lzx", Key=other, Body=b"not ours")
    project = tmp_path / "p.toml"
    project.write_text(
        f'[settings]\nformat = "zarr"\noutput = "s3://lzx/{prefix}/keep/{{nickname}}.zarr"\n'
        f'[[datasets]]\nsource = "{source}"\n'
    )
    done = run_cli("batch", project, "export-all", "-q")
    assert done.returncode == 0, done.stderr
    assert len(s3.keys("lzx", f"{prefix}/keep/src.zarr")) > 1
    done = run_cli("batch", project, "delete-all", "--yes")
    assert done.returncode == 0, done.stderr
    assert s3.keys("lzx", prefix) == [other]


def test_url_helpers():
    url = remote.as_path("s3://bucket/a/b.zarr")
    assert isinstance(url, remote.UrlPath) and str(url.parent) == "s3://bucket/a"
    assert url.root == "s3://bucket" and url.key == "a/b.zarr"
    with pytest.raises(TypeError):
        os.fspath(url)  # never a local file name
    assert remote.as_path("file:///tmp/x.h5") == Path("/tmp/x.h5")
    with pytest.raises(remote.StorageError, match="names no bucket"):
        remote.as_path("s3://")
    assert sys.modules["lazyexport.remote"] is remote


def test_a_node_written_into_an_existing_store_leaves_the_rest_of_it_alone(s3, prefix, volume):
    data, source = volume
    s3.upload_tree(source, "lzx", f"{prefix}/c.zarr/raw")
    zarr.create_group(remote.zarr_store(remote.as_path(f"s3://lzx/{prefix}/c.zarr"), False))
    before = {k for k in s3.keys("lzx", prefix)}
    url = f"s3://lzx/{prefix}/c.zarr/exports/a"
    le.export(f"s3://lzx/{prefix}/c.zarr/raw", ExportSettings(format="zarr", output=url, roi=CUT))
    keys = set(s3.keys("lzx", prefix))
    assert before <= keys  # the source node and the root are untouched
    assert all(k.startswith(f"{prefix}/c.zarr/exports/") for k in keys - before)
    np.testing.assert_array_equal(le.open_source(url).values, data[2:11, 3:37])
    with pytest.raises(le.ExportError, match="holds the source"):
        le.export(
            url.replace("/exports/a", "/raw"),
            ExportSettings(format="zarr", output=f"s3://lzx/{prefix}/c.zarr"),
        )


def test_a_zarr_output_over_objects_that_are_not_an_output_is_refused(s3, prefix, volume):
    _, source = volume
    s3.client().put_object(Bucket="lzx", Key=f"{prefix}/notes.zarr/README.txt", Body=b"mine")
    url = f"s3://lzx/{prefix}/notes.zarr"
    for overwrite in (False, True):
        with pytest.raises(le.ExportError, match="holds objects but no Zarr metadata"):
            le.export(source, ExportSettings(format="zarr", output=url), overwrite=overwrite)
    assert s3.keys("lzx", prefix) == [f"{prefix}/notes.zarr/README.txt"]


def test_review_findings_at_urls(s3, prefix, volume, tmp_path):
    """A running --resume export is not removed by another export of the same output, which
    is refused while it runs (both would write the one output in place); a consolidated store
    lists a node written into it; project files take URL sources; HTTP outputs and nodes
    inside an array are refused before anything is written."""
    data, source = volume
    # a live --resume run's held metadata: claimed by this process
    url = f"s3://lzx/{prefix}/busy.zarr"
    held = remote.as_path(f"s3://lzx/{prefix}/.busy.zarr.lazyexport-r0123456789abcdef.tmp")
    remote.put_bytes(held / "zarr.json", b"{}")
    with Run("r0123456789abcdef"):  # as a --resume export of this process runs
        remote.claim(held, "r0123456789abcdef")
        with pytest.raises(OutputBusyError, match="another export of .* runs now"):
            le.export(source, ExportSettings(format="zarr", output=url, roi={"z": (0, 2)}))
        assert remote.exists_object(held / "zarr.json")  # left alone: its owner lives
    assert remote.exists_object(held / "owner")  # its process ended without releasing it
    le.export(source, ExportSettings(format="zarr", output=url), overwrite=True)
    assert not remote.exists(held)  # now an orphan: removed by the next export
    # consolidated metadata lists the new node
    store_url = f"s3://lzx/{prefix}/cons.zarr"
    root = zarr.create_group(remote.zarr_store(remote.as_path(store_url), False))
    root.create_array("raw", shape=(2, 2), dtype="u1")
    zarr.consolidate_metadata(remote.zarr_store(remote.as_path(store_url), False))
    le.export(source, ExportSettings(format="zarr", output=f"{store_url}/exports/a"))
    listed = zarr.open_group(
        remote.zarr_store(remote.as_path(store_url)), mode="r", use_consolidated=True
    )
    assert listed.metadata.consolidated_metadata is not None
    assert "exports/a" in listed.metadata.consolidated_metadata.flattened_metadata
    # a project file with a URL source
    s3.upload_tree(source, "lzx", f"{prefix}/p/src.zarr")
    project = tmp_path / "p.toml"
    project.write_text(
        f'[settings]\nformat = "hdf5"\noutput = "{tmp_path}/{{nickname}}.h5"\n'
        f'[[datasets]]\nsource = "s3://lzx/{prefix}/p/src.zarr"\n'
    )
    done = run_cli("batch", project, "export-all", "-q")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(le.open_exported(tmp_path / "src.h5").values, data)
    # refused up front
    with pytest.raises(le.ExportError, match="read-only"):
        le.export(source, ExportSettings(format="zarr", output="https://example.org/o.zarr"))
    with pytest.raises(le.ExportError, match="holds an array at raw"):
        le.export(source, ExportSettings(format="zarr", output=f"{store_url}/raw/inner"))


def test_a_rewritten_chunk_of_a_url_source_makes_another_resume_plan(s3, prefix, volume, tmp_path):
    from lazyexport.plan import build_plan
    from lazyexport.resume import plan_token

    _, source = volume
    s3.upload_tree(source, "lzx", f"{prefix}/src.zarr")
    settings = ExportSettings(format="zarr", output=f"s3://lzx/{prefix}/o.zarr")
    before = plan_token(build_plan(f"s3://lzx/{prefix}/src.zarr", settings))
    again = plan_token(build_plan(f"s3://lzx/{prefix}/src.zarr", settings))
    s3.client().put_object(Bucket="lzx", Key=f"{prefix}/src.zarr/c/0/0/0", Body=b"rewritten")
    after = plan_token(build_plan(f"s3://lzx/{prefix}/src.zarr", settings))
    assert before == again != after  # stale blocks are never reused
