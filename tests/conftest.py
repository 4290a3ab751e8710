"""Shared fixtures: small real source files written into ``tmp_path``, the command line, and
monkeypatches several test files use. The helpers they build on are in the helpers package
(tests/helpers/); this file holds fixtures only."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from helpers import DTYPES, FILE_KINDS, WRITERS, SourceFile, arange, make_data, run_cli


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


@pytest.fixture
def zarr_store(tmp_path) -> Path:
    """A Zarr v3 store holding ``raw`` (:func:`helpers.arange` of (6, 8, 10), uint16, chunked) and
    ``labels`` (three 9s): a source store that exports go into."""
    store = tmp_path / "a.zarr"
    zarr.create_array(
        str(store),
        shape=(6, 8, 10),
        chunks=(2, 4, 5),
        dtype="uint16",
        name="raw",
        dimension_names=list("zyx"),
    )[...] = arange((6, 8, 10))
    zarr.create_array(str(store), shape=(3,), chunks=(3,), dtype="uint8", name="labels")[...] = 9
    return store
