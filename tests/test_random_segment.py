"""Randomized end to end for the segment and threshold steps: random probability maps exported
to label images, read back with independent readers and compared with numpy.

Each case draws a source (in memory, HDF5, Zarr v2/v3) with random file chunks, axes that hold
the step's axis (``c`` mostly, another axis at times), a dtype (floats with NaN, all-NaN pixels
and ties, integers), a ROI that starts inside file chunks (along the step's axis too), a step
(``segment`` or ``threshold`` with a random comparison and a number drawn from the data, so ties
with ``>=`` and ``>`` happen), output chunks and a block size down to one output chunk, an output
format (Zarr, HDF5, OME-Zarr, npy) and at times ``compute=False``. The expected labels come from
:mod:`helpers.labels` (channel by channel) and numpy's comparisons, never from lazyexport.

Sized as tests/test_random_e2e.py sizes its sample for ``make test`` (the same environment
variables and seed; cases of at most its MAX_ELEMENTS values):

    LAZYEXPORT_RANDOM_CASES=500 pytest tests/test_random_segment.py
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from pathlib import Path
from typing import Any

import dask
import h5py
import numpy as np
import pytest
import xarray as xr
import zarr

import lazyexport as le
from helpers import write_hdf5, write_zarr2, write_zarr3
from helpers.labels import COMPARISONS, expected_argmax
from helpers.zarr_nodes import read_all

CASES = int(os.environ.get("LAZYEXPORT_RANDOM_CASES", "40"))
SEED = int(os.environ.get("LAZYEXPORT_RANDOM_SEED", "13"))
MAX_ELEMENTS = 40_000  # as tests/test_random_e2e.py
AXES = ("zyxc", "czyx", "tcyx", "yxc", "zcyx", "cyx", "tzyxc")
KINDS = ("memory", "hdf5", "zarr2", "zarr3")
DTYPES = ("float32", "float32", "float64", "uint8", "uint16", "int16")
FORMATS = ("zarr", "hdf5", "ome-zarr", "npy")
NGFF_ORDER = "tczyx"


@dataclasses.dataclass
class Case:
    index: int
    kind: str
    axes: str
    shape: tuple[int, ...]
    dtype: str
    file_chunks: tuple[int, ...]
    axis: str  # the step's axis
    roi: dict[str, tuple[int, int]]
    step: dict[str, Any]  # the settings field and its text
    format: str
    chunks: dict[str, int]
    max_block_bytes: int
    lazy: bool

    def __str__(self) -> str:
        return f"case {self.index} (LAZYEXPORT_RANDOM_SEED={SEED}): {dataclasses.asdict(self)}"


def _draw_shape(rng: np.random.Generator, axes: str, axis: str) -> tuple[int, ...]:
    many = rng.random() < 0.05  # more than 255 labels: uint16
    while True:
        shape = tuple(
            (int(rng.integers(256, 300)) if many else int(rng.integers(1, 6)))
            if a == axis
            else int(rng.choice([1, 2, 3, 5, 7, 13, 24, 33] if not many else [1, 2, 3]))
            for a in axes
        )
        if math.prod(shape) <= MAX_ELEMENTS and sum(s > 1 for s in shape) >= 2:
            return shape


def _draw_roi(rng: np.random.Generator, axes: str, shape: tuple[int, ...]):
    roi = {}
    for a, n in zip(axes, shape):
        if rng.random() < 0.4:
            continue
        start = int(rng.integers(0, n))
        roi[a] = (start, int(rng.integers(start + 1, n + 1)))
    return roi


def _draw_step(rng, data: np.ndarray, case_axes: str, axis: str, roi) -> dict[str, str]:
    if rng.random() < 0.6:
        return {"segment": f"argmax:{axis}"}
    start, stop = roi.get(axis, (0, data.shape[case_axes.index(axis)]))
    index = int(rng.integers(start, stop))
    op = str(rng.choice(list(COMPARISONS)))
    values = np.take(data, index, axis=case_axes.index(axis))
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    value = float(rng.choice(finite)) if finite.size and rng.random() < 0.7 else 0.5
    return {"threshold": f"{axis}={index}:{op}{value!r}"}


def draw_case(index: int) -> tuple[Case, np.ndarray]:
    rng = np.random.default_rng([SEED, index, 7])
    axes = str(rng.choice(AXES))
    axis = "c" if rng.random() < 0.8 else str(rng.choice([a for a in axes if a != "c"]))
    shape = _draw_shape(rng, axes, axis)
    dtype = str(rng.choice(DTYPES))
    data = make_data(rng, shape, dtype)
    roi = _draw_roi(rng, axes, shape)
    out_axes = [a for a in axes if a != axis]
    case = Case(
        index=index,
        kind=str(rng.choice(KINDS)),
        axes=axes,
        shape=shape,
        dtype=dtype,
        file_chunks=tuple(int(rng.integers(1, n + 1)) for n in shape),
        axis=axis,
        roi=roi,
        step=_draw_step(rng, data, axes, axis, roi),
        format=str(rng.choice(FORMATS if set(axes) <= set(NGFF_ORDER) else FORMATS[:2])),
        chunks={a: int(rng.integers(1, 9)) for a in out_axes if rng.random() < 0.7},
        max_block_bytes=int(rng.choice([1, 64, 2048, 256 * 2**10])),
        lazy=bool(rng.random() < 0.25),
    )
    return case, data


def make_data(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        # few distinct values: ties between channels
        data = rng.integers(0, 8, size=shape).astype(dtype) / 8
        if rng.random() < 0.6:
            data[rng.random(shape) < 0.15] = np.nan
        return data
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -5), min(info.max, 5), size=shape, dtype=dtype)


def write_source(case: Case, data: np.ndarray, root: Path) -> Any:
    if case.kind == "memory":
        return xr.DataArray(data, dims=list(case.axes))
    if case.kind == "hdf5":
        return write_hdf5(root / "src.h5", data, axes=case.axes, chunks=case.file_chunks).spec
    write = write_zarr2 if case.kind == "zarr2" else write_zarr3
    return write(root / f"{case.kind}.zarr", data, axes=case.axes, chunks=case.file_chunks).spec


def expected(case: Case, data: np.ndarray) -> tuple[np.ndarray, str]:
    """The labels of the cutout, and their axes as the output stores them."""
    cut = data[tuple(slice(*case.roi.get(a, (0, n))) for a, n in zip(case.axes, case.shape))]
    at = case.axes.index(case.axis)
    if "segment" in case.step:
        labels = expected_argmax(cut, at)
    else:
        index, _, rest = case.step["threshold"].partition("=")[2].partition(":")
        op = rest[:2] if rest[:2] in COMPARISONS else rest[:1]
        channel = int(index) - case.roi.get(case.axis, (0, 0))[0]
        labels = COMPARISONS[op](np.take(cut, channel, axis=at), float(rest[len(op) :]))
    axes = "".join(a for a in case.axes if a != case.axis)
    if case.format == "ome-zarr":  # stored in NGFF's order, y and x always (length 1 added)
        order = "".join(a for a in NGFF_ORDER if a in axes or a in "yx")
        labels = labels.reshape(labels.shape + (1,) * (len(order) - len(axes)))
        axes += "".join(a for a in order if a not in axes)
        labels = np.transpose(labels, [axes.index(a) for a in order])
        axes = order
    return labels, axes


def read_back(case: Case, out: Path) -> np.ndarray:
    if case.format == "zarr":
        return read_all(zarr.open_array(str(out)))
    if case.format == "ome-zarr":
        return read_all(zarr.open_group(str(out), mode="r")["0"])
    if case.format == "npy":
        return np.load(out)
    with h5py.File(out.parent, "r") as f:
        return np.asarray(f[out.name])


def run_case(case: Case, data: np.ndarray, root: Path) -> None:
    source = write_source(case, data, root)
    names = {"zarr": "o.zarr", "ome-zarr": "o.ome.zarr", "npy": "o.npy", "hdf5": "o.h5/labels"}
    out = root / names[case.format]
    settings = le.ExportSettings(
        roi=case.roi, format=case.format, output=str(out), chunks=case.chunks or None, **case.step
    )
    result = le.export(source, settings, compute=not case.lazy)
    if case.lazy:
        dask.compute(result)
    want, _ = expected(case, data)
    got = read_back(case, out)
    assert got.shape == want.shape, case
    start, stop = case.roi.get(case.axis, (0, case.shape[case.axes.index(case.axis)]))
    labels = stop - start if "segment" in case.step else 1
    assert got.dtype == (np.uint16 if labels > 255 else np.uint8), case
    np.testing.assert_array_equal(got, want, err_msg=str(case))


@pytest.mark.parametrize("index", range(CASES), ids=lambda i: f"seed{SEED}-case{i}")
def test_random_label_export_matches_numpy(index, tmp_path, monkeypatch):
    case, data = draw_case(index)
    plan = importlib.import_module("lazyexport.plan")  # (lazyexport.plan is also the function)
    monkeypatch.setattr(plan, "MAX_BLOCK_BYTES", case.max_block_bytes)
    run_case(case, data, tmp_path)


def test_the_cases_cover_what_the_issue_asks():
    cases = [draw_case(i)[0] for i in range(max(CASES, 20))]
    assert {"segment", "threshold"} <= {next(iter(c.step)) for c in cases}
    assert any(c.max_block_bytes == 1 for c in cases)  # blocks of one output chunk
    assert any(
        c.roi.get(a, (0,))[0] % k for c in cases for a, k in zip(c.axes, c.file_chunks)
    )  # cutouts that start inside a file chunk
    assert any(c.axis != "c" for c in cases) and any(c.lazy for c in cases)
    assert {c.format for c in cases} == set(FORMATS)
