"""``lazyexport info`` from the metadata alone (issue 30): a Zarr v2/v3 store, an OME-Zarr image and
an HDF5 dataset are described without importing dask or xarray, and the description is the one
the opened DataArray gives (the export path's), for every reader that describes without opening;
the blocks it shows, computed without dask, are dask's.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from helpers import reader_samples
from helpers.sources import write_hdf5, write_zarr2
from lazyexport.describe import describe, format_size, from_array
from lazyexport.errors import SourceError
from lazyexport.sources import describe_path, open_source
from lazyexport.sources.autochunk import auto_chunks

HEAVY = ("dask", "xarray", "pandas", "h5py", "tifffile")

# runs ``info`` on each source in one fresh interpreter; prints the heavy modules loaded after each
PROBE = """
import contextlib, io, json, sys
from lazyexport.cli import main
seen = {}
for source in sys.argv[1:]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = main(["info", source])
    seen[source] = [status, out.getvalue(), [m for m in HEAVY if m in sys.modules]]
print(json.dumps(seen))
""".replace("HEAVY", repr(HEAVY))


@pytest.fixture
def light_sources(tmp_path):
    """A Zarr v2 and a sharded v3 array, an OME-Zarr image with pixel sizes and channel names,
    and HDF5 datasets (chunked with pixel sizes, and contiguous)."""
    data = np.arange(4 * 20 * 30, dtype=np.uint16).reshape(4, 20, 30)
    v2 = write_zarr2(tmp_path / "v2.zarr", data, chunks=(2, 8, 30)).spec
    v3 = tmp_path / "v3.zarr"
    zarr.create_array(
        store=str(v3), shape=(4, 64, 64), dtype=">u2", chunks=(1, 16, 16), shards=(2, 32, 64)
    )
    ome4, ome5 = tmp_path / "img.ome.zarr", tmp_path / "v05.ome.zarr"
    _ome_zarr(ome4, {"multiscales": MULTISCALES, "omero": OMERO}, zarr_format=2)
    _ome_zarr(ome5, {"ome": {"version": "0.5", "multiscales": MULTISCALES, "omero": OMERO}}, 3)
    h5 = write_hdf5(tmp_path / "a.h5", data, axes="zyx").spec
    with h5py.File(tmp_path / "a.h5", "a") as f:
        f["volume/raw"].attrs["element_size_um"] = (2.0, 0.5, 0.5)
        f.create_dataset("flat", data=np.zeros((5, 6), np.float32))  # contiguous
    return [v2, str(v3), str(ome4), str(ome5), h5, f"{tmp_path / 'a.h5'}/flat"]


MULTISCALES = [
    {
        "version": "0.4",
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 1, 0.25]}],
            }
        ],
    }
]
OMERO = {"channels": [{"label": "nuclei"}, {"label": "membrane"}]}


def _ome_zarr(path, attributes: dict, zarr_format: int) -> None:
    """An OME-Zarr image (0.4 in Zarr v2, 0.5 in v3) with pixel sizes and channel names."""
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    group.attrs.update(attributes)
    group.create_array("0", shape=(2, 3, 8, 8), dtype="uint8", chunks=(1, 3, 8, 8))


def test_info_of_zarr_ome_zarr_and_hdf5_imports_no_dask_or_xarray(light_sources):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *light_sources], capture_output=True, text=True, check=True
    )
    seen = json.loads(done.stdout)
    for source in light_sources:
        status, out, heavy = seen[source]
        assert status == 0 and out.startswith("source"), (source, out)
        # the Zarr stores come first: not even h5py or tifffile before the HDF5 files
        allowed = ["h5py"] if ".h5" in source else []
        assert heavy == allowed, f"info {source}: {heavy} imported"
        assert out.rstrip("\n") == str(from_array(open_source(source))), source


def test_the_light_description_is_the_opened_arrays(light_sources, tmp_path):
    """For every source a reader describes without opening (each reader's contract sample, the
    sources above, axes given), what ``info`` shows is what the DataArray shows."""
    samples = []
    for name in ("zarr", "hdf5", "n5", "npy", "tiff"):
        folder = tmp_path / name
        folder.mkdir()
        samples.append(reader_samples.maker(name).write(folder, reader_samples.sample_data("<u2")))
    ome_tiff = tmp_path / "c.ome.tif"
    tifffile.imwrite(
        ome_tiff,
        np.zeros((2, 3, 16, 16), np.uint8),
        metadata={"axes": "CZYX", "Channel": {"Name": ["a", "b"]}, "PhysicalSizeX": 0.5},
    )
    texts = [s.text for s in samples] + light_sources + [str(ome_tiff)]
    for text in texts:
        assert describe_path(text) is not None, text  # the light path, not the fallback
        light, heavy = describe(text), from_array(open_source(text))
        assert light == heavy and str(light) == str(heavy), text
    assert str(describe(light_sources[0], axes="tyx")) == str(
        from_array(open_source(light_sources[0], axes="tyx"))
    )
    for ome in (light_sources[2], light_sources[3]):
        assert "pixels    z=2 y=1 x=0.25 µm" in str(describe(ome)).splitlines()
        assert "channels  nuclei, membrane" in str(describe(ome)).splitlines()
    assert "shards    (2, 32, 64)" in str(describe(light_sources[1]))


def test_a_source_only_its_reader_can_open_is_opened(tmp_path):
    """A glob of slices has no light description: ``describe`` opens it (the result is the same
    as before)."""
    sample = reader_samples.maker("slice-sequence").write(
        tmp_path, reader_samples.sample_data("uint8")
    )
    assert describe_path(sample.text) is None
    assert str(describe(sample.text)) == str(from_array(open_source(sample.text)))


def test_the_light_path_refuses_what_the_export_path_refuses(tmp_path):
    """A complex Zarr array: the same one-line error either way."""
    path = tmp_path / "c.zarr"
    zarr.create_array(store=str(path), shape=(4, 4), dtype="complex64", chunks=(2, 2))
    with pytest.raises(SourceError) as light:
        describe(str(path))
    with pytest.raises(SourceError) as heavy:
        open_source(str(path))
    assert str(light.value) == str(heavy.value) and "complex64" in str(light.value)


def test_the_blocks_are_dasks_auto_chunks():
    """:func:`auto_chunks` (no dask) gives dask's ``normalize_chunks("auto", ...)`` over random
    shapes, chunk shapes (none, small, whole, larger than the array), item sizes and limits."""
    from dask.array.core import normalize_chunks

    rng = random.Random(30)
    lengths = [1, 2, 3, 7, 64, 100, 511, 4096, 5000, 30000]
    for _ in range(600):
        shape = tuple(
            rng.choice([*lengths, rng.randint(1, 70000)]) for _ in range(rng.randint(1, 5))
        )
        itemsize = rng.choice([1, 2, 4, 8])
        limit = rng.choice([64 * 2**20, 2**20, 1000, rng.randint(1, 2**28)])
        native = None
        if rng.random() > 0.2:
            native = tuple(
                rng.choice([1, 16, 100, 256, 4096, n, max(1, n // 2), rng.randint(1, 2 * n)])
                for n in shape
            )
        dtype = np.dtype(f"u{itemsize}")
        want = normalize_chunks("auto", shape, dtype=dtype, previous_chunks=native, limit=limit)
        assert auto_chunks(shape, itemsize, native, limit) == want, (shape, itemsize, native)


def test_sizes_are_printed_as_dask_prints_them():
    from dask.utils import format_bytes

    for n in [0, 1, 921, 922, 1023, 1024, 65536, 12345678, 2**30, 2**40 * 3, 2**50 * 7]:
        assert format_size(n) == format_bytes(n)
