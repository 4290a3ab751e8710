"""Pixel sizes of sources (issue 13 items 16 and 20): a source without sizes gets none invented,
in Python and on the command line, a source with sizes keeps them in every format that stores
them, and an OME-Zarr source without units keeps its scale. Each test failed before its fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import h5py
import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers.zarr_nodes import zarr_attrs
from lazyexport.cli import main

pytestmark = pytest.mark.usefixtures("small_blocks")


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
