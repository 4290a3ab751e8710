"""Shared fixtures: small real source files written into ``tmp_path``.

Every source holds the same kind of data: a ``zyx`` volume of :data:`SHAPE`, random with a
fixed seed (float32 in [0, 1), integers over the dtype's whole range), so tests can compare
what lazyexport reads or writes against the numpy array the file was made from.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
import pytest
import tifffile
import zarr

from lazyexport.axes import vigra_axistags

SHAPE = (20, 30, 40)  # z, y, x
FILE_CHUNKS = (8, 16, 16)  # native chunks of the HDF5 / Zarr sources (not aligned to anything)
DTYPES = ("float32", "uint8", "uint16")


def make_data(dtype: npt.DTypeLike, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    """Random data with a fixed seed: float32 in [0, 1), integers over the whole dtype range."""
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(kind)
    info = np.iinfo(kind)
    return rng.integers(info.min, info.max, size=shape, dtype=kind, endpoint=True)


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """A source written to disk: what to pass to ``open_source``, and what it holds."""

    kind: str
    spec: str  # e.g. "/tmp/.../raw.h5/volume/raw"
    file: Path  # the file or store on disk
    data: np.ndarray  # exactly what was written, in ``axes`` order
    axes: str  # the axes a reader should report


def write_hdf5(
    path: Path, data: np.ndarray, axes: str = "zyx", dataset: str = "volume/raw", chunks=FILE_CHUNKS
) -> SourceFile:
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape)) if chunks else None
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(dataset, data=data, chunks=chunks)
        dset.attrs["axistags"] = vigra_axistags(axes)
    return SourceFile("hdf5", f"{path}/{dataset}", path, data, axes)


def write_zarr3(path: Path, data: np.ndarray, axes: str = "zyx", chunks=FILE_CHUNKS) -> SourceFile:
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape))
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        zarr_format=3,
        dimension_names=list(axes),
    )
    arr[...] = data
    return SourceFile("zarr3", str(path), path, data, axes)


def write_zarr2(path: Path, data: np.ndarray, axes: str = "zyx", chunks=FILE_CHUNKS) -> SourceFile:
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape))
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        zarr_format=2,
        attributes={"_ARRAY_DIMENSIONS": list(axes)},
    )
    arr[...] = data
    return SourceFile("zarr2", str(path), path, data, axes)


def write_imagej_tiff(path: Path, data: np.ndarray) -> SourceFile:
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    return SourceFile("tiff", str(path), path, data, "zyx")


def write_npy(path: Path, data: np.ndarray) -> SourceFile:
    np.save(path, data)
    return SourceFile("npy", str(path), path, data, "zyx")  # 3-D, last axis > 4: guessed zyx


WRITERS = {
    "hdf5": lambda d, data: write_hdf5(d / "raw.h5", data),
    "zarr3": lambda d, data: write_zarr3(d / "raw3.zarr", data),
    "zarr2": lambda d, data: write_zarr2(d / "raw2.zarr", data),
    "tiff": lambda d, data: write_imagej_tiff(d / "raw.tif", data),
    "npy": lambda d, data: write_npy(d / "raw.npy", data),
}
FILE_KINDS = tuple(WRITERS)


@pytest.fixture(params=DTYPES)
def dtype(request) -> str:
    return request.param


@pytest.fixture
def data(dtype) -> np.ndarray:
    return make_data(dtype)


@pytest.fixture
def src_dir(tmp_path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


@pytest.fixture
def h5_source(src_dir, data) -> SourceFile:
    return WRITERS["hdf5"](src_dir, data)


@pytest.fixture
def zarr3_source(src_dir, data) -> SourceFile:
    return WRITERS["zarr3"](src_dir, data)


@pytest.fixture
def zarr2_source(src_dir, data) -> SourceFile:
    return WRITERS["zarr2"](src_dir, data)


@pytest.fixture
def tiff_source(src_dir, data) -> SourceFile:
    return WRITERS["tiff"](src_dir, data)


@pytest.fixture
def npy_source(src_dir, data) -> SourceFile:
    return WRITERS["npy"](src_dir, data)


@pytest.fixture(params=FILE_KINDS)
def file_source(request, src_dir, data) -> SourceFile:
    """Each kind of source file in turn (times each dtype)."""
    return WRITERS[request.param](src_dir, data)


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def hidden_temps(directory: Path) -> list[Path]:
    """lazyexport's hidden temporaries (``.<name>.lazyexport-<token>.<kind>``: outputs being
    written, staging and raw files, journals, commit records) anywhere below ``directory``."""
    return sorted(p for p in directory.rglob(".*.lazyexport-*"))


# --- running the CLI in a subprocess, snapshotting directories (batch / resume tests) ---

ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "lazyexport", *map(str, args)]


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    stdin=subprocess.DEVNULL,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env=cli_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(directory: Path) -> dict[str, str]:
    """Every file and directory below ``directory`` -> its content hash ("dir" for directories)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def free_disk(tmp_path):
    """Remove ``tmp_path`` after the test: for tests writing gigabytes (pytest keeps old tmp
    dirs)."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of at most 256 KiB (one slice of the small test volumes), in this process and the
    command lines it starts, so that exports have many blocks to interrupt, cancel or resume."""
    import importlib

    plan = importlib.import_module(
        "lazyexport.plan"
    )  # (lazyexport.plan is also the public function)
    monkeypatch.setenv("LAZYEXPORT_MAX_BLOCK_BYTES", str(256 * 2**10))
    monkeypatch.setattr(plan, "MAX_BLOCK_BYTES", 256 * 2**10)


@pytest.fixture
def decodes(monkeypatch):
    """Source chunk decodes (Zarr chunk files read by lazyexport's own reader), by chunk index."""
    from lazyexport import chunkio

    seen: collections.Counter = collections.Counter()
    original = chunkio.ChunkFiles._load

    def counting(self, index, *args, **kwargs):
        seen[tuple(index)] += 1
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(chunkio.ChunkFiles, "_load", counting)
    return seen


def cancel_a_huge_export(tmp_path, **options) -> tuple[float, float]:
    """Export an empty 1 TiB Zarr source (all fill value, so only the machinery is measured) to
    zarr with ``options`` and cancel it at its first progress event; return the seconds to that
    first block and from it until the export returned. Only the source is left afterwards."""
    import threading
    import time

    import pytest
    import zarr

    import lazyexport as le
    from lazyexport.errors import ExportCancelled

    source = tmp_path / "big.zarr"
    zarr.create_array(
        str(source),
        shape=(4096, 16384, 16384),
        chunks=(64, 256, 256),
        dtype="uint8",
        fill_value=0,
        dimension_names=["z", "y", "x"],
    )
    cancel, first = threading.Event(), []

    def progress(event):
        first.append(time.perf_counter())
        cancel.set()

    start = time.perf_counter()
    with pytest.raises(ExportCancelled):
        le.export(
            str(source),
            le.ExportSettings(format="zarr", output=str(tmp_path / "o")),
            progress=progress,
            cancel=cancel,
            **options,
        )
    stopped = time.perf_counter()
    assert first, "no block was written"
    assert [p.name for p in tmp_path.iterdir()] == ["big.zarr"]
    return first[0] - start, stopped - first[0]
