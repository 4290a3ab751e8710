"""Interrupting exports (SIGINT, SIGTERM, the cancel event) and resuming them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from conftest import cli_env, snapshot

SLOW_CLI = Path(__file__).with_name("slow_cli.py")
SHAPE = (24, 512, 512)   # float32: 1 MiB per slice, so --memory-limit 16MiB gives one slice per block
OUTPUTS = {
    "zarr": "{dataset_dir}/out/{nickname}.zarr",
    "tiff-sequence": "{dataset_dir}/out/{nickname}_z{slice_index}.tif",
    "hdf5": "{dataset_dir}/out/{nickname}.h5/exported_data",
}


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    rng = np.random.default_rng(7)
    np.save(work / "vol.npy", rng.random(SHAPE, dtype=np.float32))
    return work / "vol.npy"


def settings(fmt: str, **changes) -> le.ExportSettings:
    base = dict(format=fmt, output=OUTPUTS[fmt], dtype="uint8", renormalize=((0, 1), (0, 255)))
    return le.ExportSettings(**{**base, **changes})


def export_args(fmt: str, src: Path, *extra: str) -> list[str]:
    return ["export", str(src), "--format", fmt, "--output", OUTPUTS[fmt], "--dtype", "uint8",
            "--renormalize", "0,1:0,255", "--chunks", "z=1", "--memory-limit", "16MiB", "--quiet", *extra]


def read_output(fmt: str, src: Path) -> np.ndarray:
    out = src.parent / "out"
    if fmt == "zarr":
        return zarr.open_array(str(out / "vol.zarr"))[...]
    if fmt == "tiff-sequence":
        return np.stack([tifffile.imread(out / f"vol_z{i:02}.tif") for i in range(SHAPE[0])])
    import h5py

    with h5py.File(out / "vol.h5", "r") as f:
        return f["exported_data"][...]


def reference(src: Path) -> np.ndarray:
    data = np.load(src).astype("float32") * np.float32(255)
    return np.clip(np.rint(data), 0, 255).astype("uint8")


def start_slow(args: list[str], marker: Path, delay: float = 0.2) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SLOW_CLI), str(marker), str(delay), *args],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def interrupt(proc: subprocess.Popen, marker: Path, sig: int, after_blocks: int = 3) -> tuple[int, str]:
    wait_for(lambda: lines(marker) >= after_blocks or proc.poll() is not None, "blocks to be written")
    assert proc.poll() is None, "the export finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def exit_code(sig: int) -> int:
    return 130 if sig == signal.SIGINT else 143


@pytest.mark.parametrize("fmt", ["zarr", "tiff-sequence", "hdf5"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_leaving_no_temporaries_and_the_old_output_untouched(volume, tmp_path, fmt, sig):
    le.export(volume, settings(fmt, roi={"z": (0, 2)}))        # an older, different output
    before = snapshot(volume.parent)
    assert any(name.startswith("out/") for name in before)

    marker = tmp_path / "marker"
    proc = start_slow(export_args(fmt, volume, "--overwrite"), marker)
    code, err = interrupt(proc, marker, sig)
    assert code == exit_code(sig), err
    assert "temporary output removed" in err
    written = int(err.rsplit("blocks-written=", 1)[1])
    assert 3 <= written < SHAPE[0]
    assert snapshot(volume.parent) == before                  # old output intact, no temporaries


def test_without_an_older_output_nothing_final_is_left(volume, tmp_path):
    marker = tmp_path / "marker"
    proc = start_slow(export_args("zarr", volume), marker)
    code, err = interrupt(proc, marker, signal.SIGTERM)
    assert code == 143, err
    assert sorted(p.name for p in volume.parent.rglob("*")) == ["out", "vol.npy"]
