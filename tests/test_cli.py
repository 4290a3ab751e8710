"""The command line, run as a subprocess: a mistake a user can fix gives exit status 2 and one
``error: ...`` line naming the culprit, never a traceback; success paths work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import hidden_temps, make_data, write_hdf5


def run_cli(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LAZYEXPORT_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "lazyexport", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    data = make_data("uint8")
    src = write_hdf5(root / "raw.h5", data, dataset="data")
    existing = root / "exists.h5"
    with h5py.File(existing, "w") as f:
        f.create_dataset("exported_data", data=np.arange(10, dtype=np.uint8))
    os.utime(existing, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # an old file
    return {
        "root": root,
        "src": src.spec,
        "data": data,
        "existing": existing,
        "existing_bytes": existing.read_bytes(),
        "existing_mtime": existing.stat().st_mtime_ns,
    }


def error_cases(ws: dict) -> dict[str, tuple[list, list[str | re.Pattern[str]]]]:
    """name -> (arguments, substrings the one error line must contain)."""
    root, src = ws["root"], ws["src"]
    out = f"{root}/out.h5"
    return {
        "bad_roi_syntax": (["export", src, "--roi", "z0:5", "--output", out], ["z0:5"]),
        "empty_roi": (["export", src, "--roi", "z=5:5", "--output", out], ["'z'", "[0, 20)"]),
        "negative_empty_roi": (
            ["export", src, "--roi", "y=-3:-5", "--output", out],
            ["'y'", "[0, 30)"],
        ),
        "start_beyond_end": (
            ["export", src, "--roi", "z=25:", "--output", out],
            ["'z'", "25", "[0, 20)"],
        ),
        "unknown_roi_axis": (["export", src, "--roi", "q=0:5", "--output", out], ["'q'"]),
        "unknown_placeholder": (["export", src, "--output", f"{root}/{{bogus}}.h5"], ["{bogus}"]),
        "sequence_without_slice_index": (
            ["export", src, "--format", "tiff-sequence", "--output", f"{root}/slices/s.tif"],
            ["{slice_index}"],
        ),
        "slice_index_in_hdf5": (
            ["export", src, "--output", f"{root}/s{{slice_index}}.h5"],
            ["{slice_index}"],
        ),
        "unknown_format": (["export", src, "--format", "webp", "--output", out], ["webp"]),
        "missing_source": (["export", f"{root}/missing.h5/data", "--output", out], ["missing.h5"]),
        "equal_renormalize_bounds": (
            ["export", src, "--renormalize", "1,1:0,255", "--output", out],
            ["renormalize", "[1, 1]"],
        ),
        "bad_renormalize_syntax": (
            ["export", src, "--renormalize", "0,1", "--output", out],
            ["--renormalize", "0,1"],
        ),
        "axis_order_drops_axis": (
            ["export", src, "--axis-order", "yx", "--output", out],
            [re.compile(r"\bz\b")],
        ),
        "unknown_dtype": (["export", src, "--dtype", "uint7", "--output", out], ["uint7"]),
        "output_exists": (["export", src, "--output", str(ws["existing"])], [str(ws["existing"])]),
        "unknown_option": (["export", src, "--frobnicate", "--output", out], ["--frobnicate"]),
    }


@pytest.fixture(scope="module")
def error_runs(workspace) -> dict[str, subprocess.CompletedProcess]:
    """Every bad command, run concurrently (each is a fresh interpreter)."""
    cases = error_cases(workspace)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            name: pool.submit(run_cli, *args, cwd=workspace["root"])
            for name, (args, _) in cases.items()
        }
        return {name: f.result() for name, f in futures.items()}


CASE_NAMES = list(error_cases({"root": Path("/x"), "src": "s", "existing": Path("/x/e.h5")}))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_user_error_is_one_line_exit_2(name, workspace, error_runs):
    proc = error_runs[name]
    _, wanted = error_cases(workspace)[name]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error:"), line
    for w in wanted:
        if isinstance(w, re.Pattern):
            assert w.search(line[len("error:") :]), (w.pattern, line)
        else:
            assert w in line, (w, line)
    # nothing was written
    assert not (workspace["root"] / "out.h5").exists()
    assert not (workspace["root"] / "slices").exists()
    assert hidden_temps(workspace["root"]) == []


def test_existing_output_untouched_without_overwrite(workspace, error_runs):
    assert error_runs["output_exists"].returncode == 2
    existing = workspace["existing"]
    assert existing.read_bytes() == workspace["existing_bytes"]
    assert existing.stat().st_mtime_ns == workspace["existing_mtime"]


def test_export_then_overwrite(tmp_path):
    data = make_data("uint16")
    src = write_hdf5(tmp_path / "vol.h5", data, dataset="data")
    out = tmp_path / "result.h5"
    first = run_cli("export", src.spec, "--roi", "z=2:6", "--output", out, "-q")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["exported_data"][...], data[2:6])

    replaced = run_cli(
        "export",
        src.spec,
        "--roi",
        "z=0:3",
        "--dtype",
        "uint8",
        "--renormalize",
        "0,65535:0,255",
        "--axis-order",
        "czyx",
        "--output",
        out,
        "--overwrite",
        "-q",
    )
    assert replaced.returncode == 0, replaced.stderr
    with h5py.File(out, "r") as f:
        dset = f["exported_data"]
        assert dset.shape == (1, 3, 30, 40)
        assert dset.dtype == np.uint8
        f32 = np.float32
        expected = np.clip(np.rint(data[:3].astype(f32) * f32(255) / f32(65535)), 0, 255).astype(
            np.uint8
        )
        np.testing.assert_array_equal(dset[0], expected)
    assert hidden_temps(tmp_path) == []


def test_info_prints_shape_dtype_axes(workspace):
    proc = run_cli("info", workspace["src"])
    assert proc.returncode == 0, proc.stderr
    assert "z=20, y=30, x=40" in proc.stdout
    assert "uint8" in proc.stdout
    assert re.search(r"axes\s+zyx\b", proc.stdout), proc.stdout
    assert str(20 * 30 * 40) in proc.stdout


def test_demo_writes_three_outputs(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--output-dir", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("read back OK") == 3, proc.stdout
    assert "DIFFERS" not in proc.stdout
    entries = sorted(out.iterdir())
    assert len(entries) == 3, entries
    h5 = [p for p in entries if p.suffix == ".h5"]
    zarrs = [p for p in entries if p.suffix == ".zarr"]
    dirs = [p for p in entries if p.is_dir() and p.suffix != ".zarr"]
    assert len(h5) == 1 and h5[0].is_file()
    assert len(zarrs) == 1 and zarrs[0].is_dir()
    assert len(dirs) == 1
    slices = sorted(dirs[0].glob("*.tif"))
    assert len(slices) == 128  # z in [16, 144)
    assert slices[0].name == "z016.tif"
    assert hidden_temps(out) == []
