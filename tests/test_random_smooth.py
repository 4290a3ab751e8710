"""Randomized: smoothing equals scipy.ndimage.gaussian_filter of the whole in-memory source, then
cut out, to float32 rounding (<= 1e-5 relative), for random sources (HDF5, Zarr v2/v3, in
memory; several dtypes; 2-D and 3-D), cutouts that start inside a file chunk, random sigmas
(radius 1 to beyond the source's length), random output chunks and blocks as small as one
chunk, on the block path and the lazy path, which agree exactly. Blocks of arbitrary regions
(not on the block grid) are computed too.

    LAZYEXPORT_RANDOM_CASES=1000 pytest tests/test_random_smooth.py   # a quarter: 250 cases
    LAZYEXPORT_RANDOM_SEED=7 pytest tests/test_random_smooth.py       # another seed (default 13)

As for tests/test_random_e2e.py (whose case counts it follows, a quarter of them: 10 in
``make test``), a failure's message holds the case's parameters, and its test id the seed and
case number.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from scipy.ndimage import gaussian_filter

from helpers import make_data, write_hdf5, write_zarr2, write_zarr3
from lazyexport import ExportSettings
from lazyexport.blocks import BlockSource
from lazyexport.execution.lazy import export_lazily
from lazyexport.plan import build_plan
from lazyexport.run import execute

CASES = max(1, int(os.environ.get("LAZYEXPORT_RANDOM_CASES", "40")) // 4)
SEED = int(os.environ.get("LAZYEXPORT_RANDOM_SEED", "13"))
KINDS = ("memory", "hdf5", "zarr2", "zarr3")
DTYPES = ("uint8", "uint16", "int16", "float32", "float64")
RTOL = 1e-5


@dataclasses.dataclass
class Case:
    index: int
    kind: str
    dtype: str
    axes: str
    shape: tuple[int, ...]
    file_chunks: tuple[int, ...]
    roi: dict[str, tuple[int, int]]
    sigma: dict[str, float]
    chunks: dict[str, int]  # output chunks
    block_bytes: int  # the largest block
    path: str  # "blocks" or "lazy"

    def __str__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self).items())
        return f"case {self.index} (LAZYEXPORT_RANDOM_SEED={SEED}): {fields}"


def draw_case(index: int) -> Case:
    rng = np.random.default_rng([SEED, index])
    axes = str(rng.choice(["zyx", "yx", "zyx"]))
    shape = tuple(int(rng.integers(3, 40)) for _ in axes)
    file_chunks = tuple(int(rng.integers(2, n + 1)) for n in shape)
    roi = {}
    for a, n, c in zip(axes, shape, file_chunks):
        start = int(rng.integers(0, n)) if rng.random() < 0.8 else 0
        if rng.random() < 0.5 and c < n:  # inside the first file chunk's span
            start = int(rng.integers(1, c + 1)) % n
        roi[a] = (start, int(rng.integers(start + 1, n + 1)))
    smoothed = [a for a in axes if rng.random() < 0.7] or [axes[-1]]
    sigma = {
        a: round(float(rng.choice([0.3, 1.0, 2.5, 6.0]) * rng.uniform(0.5, 1.5)), 3)
        for a in smoothed
    }
    # output chunks: mostly a quarter of the cutout or less, so that there are many blocks
    chunks = {a: _draw_length(rng, b - a0) for a, (a0, b) in roi.items()}
    dtype = str(rng.choice(DTYPES))
    itemsize = 8 if dtype == "float64" else 4
    one_chunk = int(np.prod(list(chunks.values()))) * itemsize
    block_bytes = one_chunk * int(rng.choice([1, 1, 2, 5, 50]))
    return Case(
        index,
        str(rng.choice(KINDS)),
        dtype,
        axes,
        shape,
        file_chunks,
        roi,
        sigma,
        chunks,
        block_bytes,
        str(rng.choice(["blocks", "lazy"])),
    )


def _draw_length(rng: np.random.Generator, n: int) -> int:
    most = n // 4 if rng.random() < 0.7 else n
    return int(rng.integers(1, max(most, 1) + 1))


def source(case: Case, data: np.ndarray, root: Path) -> Any:
    if case.kind == "memory":
        return xr.DataArray(data, dims=tuple(case.axes))
    path, chunks = root / f"src.{case.kind}", case.file_chunks
    if case.kind == "hdf5":
        return write_hdf5(path, data, axes=case.axes, chunks=chunks).spec
    write = write_zarr2 if case.kind == "zarr2" else write_zarr3
    return write(path, data, axes=case.axes, chunks=chunks).spec


def expected(case: Case, data: np.ndarray) -> np.ndarray:
    sigma = [case.sigma.get(a, 0.0) for a in case.axes]
    whole = gaussian_filter(data.astype(np.float64), sigma, truncate=4.0)
    return whole[tuple(slice(*case.roi[a]) for a in case.axes)]


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    scale = max(float(np.abs(want).max()), 1e-30)
    error = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert error <= RTOL, f"{what}: relative error {error:.3g}"


def _case_id(index: int) -> str:
    return f"seed{SEED}-case{index}"


@pytest.mark.parametrize("index", range(CASES), ids=_case_id)
def test_random_smooth_matches_scipy(index, tmp_path, monkeypatch):
    import importlib

    case = draw_case(index)
    plan_module = importlib.import_module("lazyexport.plan")
    monkeypatch.setattr(plan_module, "MAX_BLOCK_BYTES", case.block_bytes)
    data = make_data(case.dtype, case.shape, seed=index)
    want = expected(case, data)
    out = tmp_path / "out.zarr"
    settings = ExportSettings(
        roi=case.roi, smooth=case.sigma, chunks=case.chunks, format="zarr", output=str(out)
    )
    plan = build_plan(source(case, data, tmp_path), settings, memory_limit="16MiB")
    if case.path == "blocks":
        execute(plan)
    else:
        dask.compute(export_lazily(plan), scheduler="threads")
    got = np.asarray(zarr.open_array(str(out), mode="r")[...])
    assert_close(got, want, f"{case} ({plan.nblocks} blocks)")
    np.testing.assert_array_equal(got, plan.result.values, err_msg=str(case))
    # blocks anywhere, of any size: the block path's values are the same
    blocks = BlockSource(plan)
    rng = np.random.default_rng([SEED, index, 1])
    for _ in range(3):
        region = []
        for n in plan.shape:
            start = int(rng.integers(0, n))
            region.append(slice(start, int(rng.integers(start + 1, n + 1))))
        piece = blocks.compute(tuple(region))
        np.testing.assert_array_equal(piece, got[tuple(region)], err_msg=f"{case} at {region}")
