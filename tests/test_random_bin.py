"""Randomized binning end to end: random sources (in memory, HDF5, Zarr v2/v3, npy), dtypes,
shapes, cutouts that start inside file chunks, factors, methods, output chunks and block sizes
down to one chunk, exported (some lazily: ``compute=False``) and compared with numpy's
reduction of the whole cutout (``helpers.binning``), as tests/test_random_e2e.py does for the
other transformations.

    LAZYEXPORT_RANDOM_CASES=200 pytest tests/test_random_bin.py     # more cases (default 16)
    LAZYEXPORT_RANDOM_SEED=7 pytest tests/test_random_bin.py        # another seed (default 13)
"""

from __future__ import annotations

import dataclasses
import importlib
import os

import dask
import numpy as np
import pytest

import lazyexport as le
from helpers import write_hdf5, write_npy, write_zarr2, write_zarr3
from helpers.binning import reference

CASES = int(os.environ.get("LAZYEXPORT_RANDOM_CASES", "16"))
SEED = int(os.environ.get("LAZYEXPORT_RANDOM_SEED", "13"))
KINDS = ("memory", "hdf5", "zarr2", "zarr3", "npy")
METHODS = ("mean", "max", "min", "mode", "nearest")


@dataclasses.dataclass
class Case:
    index: int
    kind: str
    dtype: str
    shape: tuple[int, ...]
    file_chunks: tuple[int, ...]
    roi: dict[str, tuple[int, int]]
    factors: dict[str, int]
    method: str
    chunks: dict[str, int]  # output chunks
    block_bytes: int  # the planner's cap on a block (1: one chunk per block)
    format: str
    lazy: bool

    def __str__(self) -> str:
        return f"case {self.index} (LAZYEXPORT_RANDOM_SEED={SEED}): {dataclasses.asdict(self)}"


def draw(index: int) -> Case:
    rng = np.random.default_rng([SEED, index])
    # (x at least 5 long: a short last axis of a npy file is taken for channels)
    shape = tuple(int(n) for n in rng.integers([1, 1, 5], 36))
    roi = {}
    for a, n in zip("zyx", shape):
        start = int(rng.integers(0, n))
        roi[a] = (start, int(rng.integers(start + 1, n + 1)))
    factors = {a: int(rng.integers(1, 6)) for a in "zyx"}
    method = str(rng.choice(METHODS))
    return Case(
        index=index,
        kind=str(rng.choice(KINDS)),
        dtype="uint8"
        if method == "mode"
        else str(rng.choice(["uint8", "uint16", "int16", "float32"])),
        shape=shape,
        file_chunks=tuple(int(rng.integers(1, 12)) for _ in shape),
        roi=roi,
        factors=factors,
        method=method,
        chunks={a: int(rng.integers(1, 9)) for a in "zyx"},
        block_bytes=int(rng.choice([1, 64, 512, 4096])),
        format=str(rng.choice(["zarr", "hdf5"])),
        lazy=bool(rng.random() < 0.25),
    )


def values(case: Case) -> np.ndarray:
    rng = np.random.default_rng([SEED, case.index, 1])
    if case.method == "mode":
        return rng.integers(0, 4, case.shape).astype("uint8")
    if case.dtype == "float32":
        return rng.normal(0, 100, case.shape).astype("float32")
    info = np.iinfo(case.dtype)
    return rng.integers(info.min, int(info.max) + 1, case.shape).astype(case.dtype)


def source(case: Case, data: np.ndarray, tmp_path):
    chunks = case.file_chunks
    if case.kind == "memory":
        return data
    if case.kind == "hdf5":
        return write_hdf5(tmp_path / "s.h5", data, chunks=chunks).spec
    if case.kind == "zarr2":
        return write_zarr2(tmp_path / "s2.zarr", data, chunks=chunks).spec
    if case.kind == "zarr3":
        return write_zarr3(tmp_path / "s3.zarr", data, chunks=chunks).spec
    return write_npy(tmp_path / "s.npy", data).spec


@pytest.mark.parametrize("index", range(CASES), ids=lambda i: f"seed{SEED}-case{i}")
def test_random_binning_equals_numpy(tmp_path, monkeypatch, index):
    case = draw(index)
    monkeypatch.setenv("LAZYEXPORT_MAX_BLOCK_BYTES", str(case.block_bytes))
    monkeypatch.setattr(
        importlib.import_module("lazyexport.plan"), "MAX_BLOCK_BYTES", case.block_bytes
    )
    data = values(case)
    cut = data[tuple(slice(*case.roi[a]) for a in "zyx")]
    expected = reference(cut, tuple(case.factors[a] for a in "zyx"), case.method)
    out = tmp_path / ("o.zarr" if case.format == "zarr" else "o.h5")
    settings = le.ExportSettings(
        roi=case.roi,
        bin=case.factors,
        bin_method=case.method,
        chunks=case.chunks,
        format=case.format,
        output=str(out),
    )
    src = source(case, data, tmp_path)
    if case.lazy:
        dask.compute(le.export(src, settings, memory_limit="16MiB", compute=False))
        # (HDF5: the default dataset, docs/formats.md)
        result = le.open_exported(str(out) if case.format == "zarr" else f"{out}/exported_data")
    else:
        result = le.open_exported(le.export(src, settings, memory_limit="16MiB"))
    got = np.asarray(result)
    assert got.shape == expected.shape, case
    np.testing.assert_array_equal(got, expected, err_msg=str(case))
