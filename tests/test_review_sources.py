"""Issue 13, the items about sources (readers and their metadata): each test failed before its fix.

Item 3: resume notices a source whose pixels changed; 12: 64-bit integer TIFFs; 13: glob sources
with mismatched slices; 16: no invented pixel sizes; 17: N5 codecs; 20: unitless OME-Zarr scales;
24: ``info`` shows the file's chunks and shards.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

import h5py
import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers.zarr_nodes import read_all, zarr_attrs
from lazyexport.cli import main
from lazyexport.errors import ExportError, SourceError

pytestmark = pytest.mark.usefixtures("small_blocks")

# ------------------------------------------------------------ item 3: resume and changed sources

RESUME_SHAPE = (
    12,
    256,
    512,
)  # float32: 512 KiB per slice; one slice per block at 16 MiB / 2 workers


def _cancel_after(blocks: int):
    cancel = threading.Event()

    def progress(event):
        if event.blocks_done >= blocks:
            cancel.set()

    return progress, cancel


def _write_source(kind: str, path: Path, data: np.ndarray) -> str:
    """Write ``data`` as a ``kind`` source at ``path`` (or rewrite its pixels in place); return the
    spec."""
    chunks = (1, 128, 128)
    if kind in ("zarr2", "zarr3"):
        fmt: Literal[2, 3] = 2 if kind == "zarr2" else 3
        if path.exists():
            zarr.open_array(str(path), mode="r+")[...] = data
        else:
            zarr.create_array(
                store=str(path), shape=data.shape, dtype=data.dtype, chunks=chunks, zarr_format=fmt
            )[...] = data
        return str(path)
    if kind == "ome-zarr":
        if path.exists():
            zarr.open_array(str(path / "0"), mode="r+")[...] = data
        else:
            le.export(
                data,
                le.ExportSettings(
                    format="ome-zarr", output=str(path), levels=1, chunks=dict(zip("zyx", chunks))
                ),
            )
        return str(path)
    import tensorstore as ts

    spec: dict[str, Any] = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(path)},
        "path": "raw",
    }
    if not path.exists():
        spec.update(
            create=True,
            metadata={
                "dimensions": list(reversed(data.shape)),
                "dataType": "float32",
                "blockSize": list(reversed(chunks)),
                "compression": {"type": "gzip"},
            },
        )
    ts.open(spec).result().write(data.transpose()).result()
    return f"{path}/raw"


@pytest.mark.parametrize(
    "kind, name",
    [("zarr3", "src.zarr"), ("zarr2", "src.zarr"), ("ome-zarr", "src.ome.zarr"), ("n5", "src.n5")],
)
def test_item03_resume_after_the_source_pixels_changed_writes_the_new_data(tmp_path, kind, name):
    rng = np.random.default_rng(3)
    old = rng.random(RESUME_SHAPE, dtype=np.float32)
    new = rng.random(RESUME_SHAPE, dtype=np.float32)
    spec = _write_source(kind, tmp_path / name, old)
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"), chunks={"z": 1})
    progress, cancel = _cancel_after(4)
    with pytest.raises(ExportError, match="cancelled"):
        le.export(
            spec, settings, memory_limit="16MiB", resume=True, progress=progress, cancel=cancel
        )
    assert any(".lazyexport-r" in p.name for p in tmp_path.iterdir())  # kept for --resume

    _write_source(kind, tmp_path / name, new)  # same shape, dtype and metadata; new pixels
    events: list = []
    le.export(spec, settings, memory_limit="16MiB", resume=True, progress=events.append)
    assert events[0].blocks_done == 1  # nothing reused
    resumed = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    clean = le.export(spec, le.ExportSettings(format="zarr", output=str(tmp_path / "clean.zarr")))
    np.testing.assert_array_equal(resumed, zarr.open_array(str(clean.output), mode="r")[...])
    np.testing.assert_array_equal(resumed, new)


def test_item03_an_unchanged_source_still_resumes(tmp_path):
    spec = _write_source("zarr3", tmp_path / "src.zarr", np.ones(RESUME_SHAPE, np.float32))
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"), chunks={"z": 1})
    progress, cancel = _cancel_after(4)
    with pytest.raises(ExportError, match="cancelled"):
        le.export(
            spec, settings, memory_limit="16MiB", resume=True, progress=progress, cancel=cancel
        )
    events: list = []
    le.export(spec, settings, memory_limit="16MiB", resume=True, progress=events.append)
    assert events[0].blocks_done > 1  # finished blocks reused
    assert read_all(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")).all()


@pytest.mark.parametrize("kind", ["file", "glob"])
def test_item03_a_file_rewritten_with_its_old_mtime_is_another_source(tmp_path, kind):
    """The size (and inode) is part of a file's identity, not just the mtime (``cp -p`` keeps
    that)."""
    import os

    first = tmp_path / "a_0.tif"
    tifffile.imwrite(first, np.zeros((8, 8), np.uint8))
    spec = str(first) if kind == "file" else str(tmp_path / "a_*.tif")
    before = le.open_source(spec).data.name
    stat = first.stat()
    tifffile.imwrite(first, np.zeros((8, 8), np.uint8), description="another header, another size")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert first.stat().st_size != stat.st_size
    assert le.open_source(spec).data.name != before


def test_item03_resume_refuses_a_source_whose_identity_is_unknown(tmp_path, monkeypatch):
    from lazyexport.sources import base

    spec = _write_source("zarr3", tmp_path / "src.zarr", np.ones((2, 16, 16), np.float32))

    def unlistable(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(base, "_listing", unlistable)
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"))
    with pytest.raises(ExportError, match="cannot tell whether the source changed") as err:
        le.export(spec, settings, resume=True)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out.zarr").exists()
    le.export(spec, settings)  # without resume it exports
    assert read_all(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")).all()


# ------------------------------------------------------------ item 12: 64-bit integer TIFFs


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
@pytest.mark.parametrize("fmt", ["zarr", "ome-zarr"])
def test_item12_64_bit_integer_tiff_exports_to_zarr(tmp_path, dtype, fmt):
    info = np.iinfo(dtype)
    data = np.arange(2 * 8 * 8, dtype=dtype).reshape(2, 8, 8) * (info.max // 200)
    data[0, 0, :2] = info.min, info.max  # beyond float64's exact integers
    tifffile.imwrite(tmp_path / "big.tif", data)
    src = le.open_source(str(tmp_path / "big.tif"))
    assert src.dtype.type is np.dtype(dtype).type
    # (zarr has no levels: refused)
    levels: dict[str, Any] = {"levels": 1} if fmt == "ome-zarr" else {}
    result = le.export(
        src, le.ExportSettings(format=fmt, output=str(tmp_path / "out.zarr"), **levels)
    )
    back = le.open_exported(result)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.values, data)


# ------------------------------------------------------------ item 13: glob sources


def _slices(folder: Path, odd: np.ndarray | None = None, at: int = 2) -> str:
    folder.mkdir()
    for i in range(4):
        slice_ = odd if odd is not None and i == at else np.full((6, 5), i, np.uint8)
        tifffile.imwrite(folder / f"s_{i}.tif", slice_)
    return str(folder / "s_*.tif")


@pytest.mark.parametrize(
    "odd, what",
    [
        (np.full((7, 5), 9, np.uint8), r"\(7, 5\)"),
        (np.full((6, 5), 300, np.uint16), "uint16"),
        (np.full((6, 5, 3), 9, np.uint8), r"\(6, 5, 3\)"),
    ],
    ids=["larger", "dtype", "rgb"],
)
def test_item13_mismatched_slices_are_refused_naming_the_file(tmp_path, odd, what):
    pattern = _slices(tmp_path / "slices", odd)
    with pytest.raises(SourceError, match=f"s_2.tif.*{what}") as err:
        le.open_source(pattern)
    assert "\n" not in str(err.value)


def test_item13_cli_info_refuses_a_mismatched_glob_with_exit_2(tmp_path, capsys):
    pattern = _slices(tmp_path / "slices", np.full((6, 5), 300, np.uint16), at=3)
    assert main(["info", pattern]) == 2
    err = capsys.readouterr().err
    assert "s_3.tif" in err and "uint16" in err and len(err.strip().splitlines()) == 1


def test_item13_matching_slices_still_open(tmp_path):
    src = le.open_source(_slices(tmp_path / "slices"))
    assert src.shape == (4, 6, 5)
    np.testing.assert_array_equal(src.values[:, 0, 0], [0, 1, 2, 3])


def test_item13_mismatched_png_slices_are_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "png"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 5), i, np.uint8)).save(folder / f"p_{i}.png")
    Image.fromarray(np.full((6, 5, 3), 1, np.uint8)).save(folder / "p_1.png")
    with pytest.raises(SourceError, match=r"p_1.png.*\(6, 5, 3\)"):
        le.open_source(str(folder / "p_*.png"))


# ------------------------------------------------------------ item 16: no invented pixel sizes


def _metadata(result) -> dict:
    """What each format says about pixel sizes, as one flat dict (empty: nothing said)."""
    out = Path(result.output)
    fmt = result.format
    found: dict = {}
    if fmt == "n5":
        attrs = json.loads((out / "attributes.json").read_text())
        found = {k: attrs[k] for k in ("pixelResolution", "resolution", "units") if k in attrs}
    elif fmt == "hdf5":
        with h5py.File(out, "r") as f:
            dset = f["exported_data"]
            if "element_size_um" in dset.attrs:
                found["element_size_um"] = list(dset.attrs["element_size_um"])
            res = [a["resolution"] for a in json.loads(dset.attrs["axistags"])["axes"]]
            if any(res):
                found["axistags"] = res
    elif fmt == "ome-zarr":
        image = zarr_attrs(zarr.open_group(str(out), mode="r"))["ome"]["multiscales"][0]
        units = [a["unit"] for a in image["axes"] if "unit" in a]
        if units:
            found["units"] = units
        scale = image["datasets"][0]["coordinateTransformations"][0]["scale"]
        if scale != [1.0] * len(scale):
            found["scale"] = scale
    else:
        with tifffile.TiffFile(out) as tif:
            page = tif.pages.first
            if tif.is_imagej:
                assert tif.imagej_metadata is not None
                found = {k: v for k, v in tif.imagej_metadata.items() if k in ("spacing", "unit")}
            elif tif.is_ome:
                assert tif.ome_metadata is not None
                pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
                assert pixels is not None
                found = {k: v for k, v in pixels.attrib.items() if k.startswith("PhysicalSize")}
            else:
                assert tif.shaped_metadata is not None
                meta = tif.shaped_metadata[0]
                found = {k: meta[k] for k in ("pixel_size", "unit") if k in meta}
            if page.tags.get("ResolutionUnit") and page.tags["ResolutionUnit"].value != 1:
                found["resolution"] = page.resolution
    return found


FORMATS_WITH_SIZES = [
    ("n5", {}),
    ("hdf5", {}),
    ("ome-zarr", {"levels": 1}),
    ("tiff", {}),
    ("tiff", {"tiff_flavor": "imagej"}),
    ("tiff", {"tiff_flavor": "ome"}),
]
FORMAT_IDS = ["n5", "hdf5", "ome-zarr", "tiff", "imagej", "ome-tiff"]


@pytest.mark.parametrize("fmt, options", FORMATS_WITH_SIZES, ids=FORMAT_IDS)
def test_item16_a_source_without_sizes_gets_none_invented(tmp_path, fmt, options):
    np.save(tmp_path / "raw.npy", np.arange(4 * 8 * 6, dtype=np.uint8).reshape(4, 8, 6))
    src = le.open_source(str(tmp_path / "raw.npy"))
    assert "pixel_size" not in src.attrs
    result = le.export(src, le.ExportSettings(format=fmt, output=str(tmp_path / "out"), **options))
    assert _metadata(result) == {}
    assert "pixel_size" not in le.open_exported(result).attrs


def test_item16_the_cli_invents_no_sizes_either(tmp_path, capsys):
    np.save(tmp_path / "raw.npy", np.zeros((4, 8, 6), np.uint8))
    out = tmp_path / "o.n5"
    assert (
        main(["export", str(tmp_path / "raw.npy"), "--format", "n5", "--output", str(out), "-q"])
        == 0
    )
    attrs = json.loads((out / "attributes.json").read_text())
    assert "pixelResolution" not in attrs and "resolution" not in attrs


@pytest.mark.parametrize("fmt, options", FORMATS_WITH_SIZES, ids=FORMAT_IDS)
def test_item16_a_source_with_sizes_keeps_them(tmp_path, fmt, options):
    data = np.arange(4 * 8 * 6, dtype=np.uint8).reshape(4, 8, 6)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 1.5, "unit": "micron"},
    )
    src = le.open_source(str(tmp_path / "ij.tif"))
    result = le.export(src, le.ExportSettings(format=fmt, output=str(tmp_path / "out"), **options))
    assert _metadata(result) != {}
    back = le.open_exported(result)
    assert back.attrs["pixel_size"] == pytest.approx({"z": 1.5, "y": 0.25, "x": 0.25})
    assert back.attrs["unit"] == "micrometer"


# ------------------------------------------------------------ item 17: N5 codecs

N5_CODECS = [
    {"type": "xz", "preset": 6},
    {"type": "bzip2", "blockSize": 9},
    {"type": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 2, "blocksize": 0},
    {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
    {"type": "zstd", "level": 3},
    {"type": "gzip", "level": -1, "useZlib": True},
    {"type": "gzip", "level": 6, "useZlib": False},
    {"type": "raw"},
]


@pytest.mark.parametrize("codec", N5_CODECS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_item17_n5_sources_of_every_tensorstore_codec_read_and_export(tmp_path, codec):
    import tensorstore as ts

    data = np.arange(5 * 19 * 13, dtype=np.uint16).reshape(5, 19, 13) * 7
    ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "in.n5")},
            "path": "vol",
            "create": True,
            "metadata": {
                "dimensions": [13, 19, 5],
                "blockSize": [8, 8, 2],
                "dataType": "uint16",
                "compression": codec,
            },
        },
    ).result().write(data.transpose()).result()
    src = le.open_source(str(tmp_path / "in.n5/vol"))
    np.testing.assert_array_equal(src.values, data)
    np.testing.assert_array_equal(src[1:4, 3:17, 2:11].values, data[1:4, 3:17, 2:11])
    result = le.export(src, le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr")))
    np.testing.assert_array_equal(zarr.open_array(str(result.output), mode="r")[...], data)


def test_item17_an_unsupported_n5_codec_is_refused_by_info_with_exit_2(tmp_path, capsys):
    node = tmp_path / "lz4.n5"
    node.mkdir()
    (node / "attributes.json").write_text(
        json.dumps(
            {
                "n5": "4.0.0",
                "dimensions": [4, 4],
                "blockSize": [2, 2],
                "dataType": "uint8",
                "compression": {"type": "lz4", "blockSize": 65536},
            }
        )
    )
    assert main(["info", str(node)]) == 2
    err = capsys.readouterr().err
    assert "lz4" in err and len(err.strip().splitlines()) == 1
    assert (
        main(["export", str(node), "--format", "zarr", "--output", str(tmp_path / "o.zarr"), "-q"])
        == 2
    )
    assert not (tmp_path / "o.zarr").exists()


# ------------------------------------------------------------ item 20: OME-Zarr scale without units


def test_item20_an_ome_zarr_source_without_units_keeps_its_scale(tmp_path):
    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=(3, 8, 6), dtype="uint8", chunks=(1, 8, 6))[...] = 5
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "img",
            "axes": [{"name": a, "type": "space"} for a in "zyx"],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}],
                }
            ],
        }
    ]
    src = le.open_source(str(tmp_path / "img.ome.zarr"))
    assert src.attrs["pixel_size"] == {"z": 2.0, "y": 0.5, "x": 0.5}
    assert src.attrs.get("unit") is None  # unitless, not micrometer
    settings = le.ExportSettings(format="ome-zarr", output=str(tmp_path / "o.ome.zarr"), levels=1)
    result = le.export(src, settings)
    image = zarr_attrs(zarr.open_group(str(result.output), mode="r"))["ome"]["multiscales"][0]
    assert image["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
    assert all("unit" not in a for a in image["axes"])
    # formats whose size is in a fixed unit leave it out; vigra axistags hold plain numbers
    result = le.export(src, le.ExportSettings(format="hdf5", output=str(tmp_path / "out.h5")))
    with h5py.File(result.output, "r") as f:
        assert "element_size_um" not in f["exported_data"].attrs
        tags = json.loads(f["exported_data"].attrs["axistags"])["axes"]
        assert [a["resolution"] for a in tags] == [2.0, 0.5, 0.5]
    # a unit given in the settings names the unit of the source's sizes
    result = le.export(
        src, le.ExportSettings(format="n5", output=str(tmp_path / "out.n5"), unit="nm")
    )
    attrs = json.loads((result.output / "attributes.json").read_text())
    assert attrs["pixelResolution"] == {"unit": "nm", "dimensions": [0.5, 0.5, 2.0]}


# ------------------------------------------------------------ item 24: info shows the file's chunks


def test_item24_info_shows_the_file_chunks_and_the_dask_blocks_where_they_differ(tmp_path, capsys):
    arr = zarr.create_array(
        store=str(tmp_path / "c.zarr"),
        shape=(40, 600, 600),
        dtype="uint8",
        chunks=(10, 64, 64),
        zarr_format=3,
    )
    d = le.describe(str(tmp_path / "c.zarr"))
    assert d.chunks == (10, 64, 64) and d.shards is None
    assert d.blocks != d.chunks
    assert main(["info", str(tmp_path / "c.zarr")]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["chunks"] == "(10, 64, 64)"
    assert "shards" not in lines
    assert lines["blocks"].startswith(str(d.blocks))
    del arr


def test_item24_info_shows_shards(tmp_path, capsys):
    zarr.create_array(
        store=str(tmp_path / "s.zarr"),
        shape=(20, 256, 256),
        dtype="uint8",
        chunks=(5, 32, 32),
        shards=(10, 128, 128),
        zarr_format=3,
    )
    d = le.describe(str(tmp_path / "s.zarr"))
    assert d.chunks == (5, 32, 32) and d.shards == (10, 128, 128)
    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["chunks"] == "(5, 32, 32)" and lines["shards"] == "(10, 128, 128)"


def test_item24_info_of_n5_and_hdf5_shows_their_chunks(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("raw", shape=(30, 300, 300), dtype="uint8", chunks=(3, 30, 30))
    assert le.describe(str(tmp_path / "a.h5/raw")).chunks == (3, 30, 30)
    settings = le.ExportSettings(
        format="n5", output=str(tmp_path / "b.n5"), chunks=dict(z=5, y=20, x=40)
    )
    le.export(np.zeros((30, 300, 300), np.uint8), settings)
    d = le.describe(str(tmp_path / "b.n5"))
    assert d.chunks == (5, 20, 40) and d.blocks != d.chunks


def test_item24_info_of_a_dask_array_shows_its_chunks_and_of_npy_none(tmp_path):
    import dask.array as da

    d = le.describe(da.zeros((40, 64, 64), chunks=(8, 32, 64)))
    assert (
        d.chunked
        and d.chunks == (8, 32, 64)
        and "not chunked" not in str(d)
        and "blocks" not in str(d)
    )
    np.save(tmp_path / "v.npy", np.zeros((4, 4)))
    assert "chunks    none (not chunked)" in str(le.describe(str(tmp_path / "v.npy")))


def test_item12_an_in_memory_array_of_an_aliased_dtype_exports_to_zarr(tmp_path):
    data = np.arange(24, dtype=np.ulonglong).reshape(2, 3, 4)  # equal to uint64, another type
    assert le.open_source(data).dtype.type is np.dtype("uint64").type
    result = le.export(data, le.ExportSettings(format="zarr", output=str(tmp_path / "m.zarr")))
    np.testing.assert_array_equal(zarr.open_array(str(result.output), mode="r")[...], data)


# ------------------------------------------- review of #27, finding 8: '[', '*', '?' in URL keys


@pytest.fixture(scope="module")
def s3_keys():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.objstore import s3_bucket

    with s3_bucket("lzg") as server:
        yield server


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("scan[1].zarr", "zarr"),
        ("a[1]/v.zarr", "zarr"),
        ("scan[1].h5", "hdf5"),
        ("s*1.zarr", "zarr"),
    ],
)
def test_finding8_a_url_whose_key_holds_glob_characters_opens_by_its_suffix(s3_keys, name, fmt):
    data = np.arange(4 * 8 * 8, dtype="uint16").reshape(4, 8, 8)
    url = f"s3://lzg/{name}"
    le.export(data, le.ExportSettings(format=fmt, output=url))
    np.testing.assert_array_equal(le.open_source(url).values, data)


def test_finding8_a_glob_at_a_url_that_names_no_object_is_still_refused_in_one_line(s3_keys):
    with pytest.raises(SourceError, match="read from local files only") as info:
        le.open_source("s3://lzg/slices/z_*.tif")
    assert "\n" not in str(info.value) and "slices" in str(info.value)
