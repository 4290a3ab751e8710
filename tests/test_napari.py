"""The napari writers (lazyexport/napari.py, contributed by lazyexport/napari.yaml through npe2),
headless: the manifest is validated and discovered through the installed entry point, and layers
are written through npe2's own dispatch (what napari's "Save Layers" calls) with layer data
tuples as napari makes them, then read back with independent readers (zarr, ome-zarr, h5py,
tifffile). No napari and no Qt are needed."""

from __future__ import annotations

import json
from importlib import resources
from typing import cast
from xml.etree import ElementTree

import dask.array as da
import h5py
import npe2
import numpy as np
import pytest
import tifffile
import zarr
from npe2.types import FullLayerData
from numpydoc.validate import validate

import lazyexport as le
from helpers.zarr_nodes import as_array, read_all, zarr_attrs
from lazyexport import napari as writers
from lazyexport.errors import AxisError, FormatError

PLUGIN = "lazyexport"
SCALE = [2.0, 0.5, 0.25]  # z, y, x
WRITERS = {  # command -> (layer types, extensions)
    "lazyexport.write_ome_zarr": (["image?", "labels*"], [".ome.zarr", ".zarr"]),
    "lazyexport.write_hdf5": (["image*", "labels*"], [".h5", ".hdf5"]),
    "lazyexport.write_tiff_image": (["image"], [".tif", ".tiff", ".ome.tif", ".ome.tiff"]),
    "lazyexport.write_tiff_labels": (["labels"], [".tif", ".tiff", ".ome.tif", ".ome.tiff"]),
}


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """npe2's global plugin manager with the installed plugins discovered, as napari does at
    start-up (npe2.write dispatches through it)."""
    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm


def image(shape=(6, 40, 50), dtype="uint16", seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)


def labels(shape=(6, 40, 50), dtype="int32", seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 7, size=shape).astype(dtype)


def meta(name, scale=SCALE, units="micrometer", **more):
    """A layer's metadata as napari's ``as_layer_data_tuple`` gives it (the keys read here);
    ``units`` as napari keeps them, one per axis; default axis labels "-3", "-2", "-1"."""
    ndim = len(scale)
    return {
        "name": name,
        "scale": list(scale),
        "translate": [0.0] * ndim,
        "units": (units,) * ndim,
        "axis_labels": tuple(str(i) for i in range(-ndim, 0)),
        "multiscale": False,
        "metadata": {},
        **more,
    }


# ---------------------------------------------------------------- manifest and discovery


def test_the_manifest_validates_and_its_commands_import():
    path = resources.files("lazyexport") / "napari.yaml"
    manifest = npe2.PluginManifest.from_file(str(path))
    manifest.validate_imports()  # every python_name resolves
    assert manifest.name == PLUGIN
    writers_found = {
        w.command: (w.layer_types, w.filename_extensions) for w in manifest.contributions.writers
    }
    assert writers_found == WRITERS
    widgets = {w.command for w in manifest.contributions.widgets or []}
    assert widgets == {"lazyexport.export_widget"}  # the export widget (test_napari_widget.py)
    for command in manifest.contributions.commands:
        module, _, function = command.python_name.partition(":")
        if command.id in widgets:
            assert command.python_name == "lazyexport.napari_widget:ExportWidget"
            continue
        assert module == "lazyexport.napari"
        assert function in writers.__all__


def test_a_broken_manifest_does_not_validate(tmp_path):
    text = (resources.files("lazyexport") / "napari.yaml").read_text()
    broken = tmp_path / "napari.yaml"
    broken.write_text(text.replace('["image?", "labels*"]', '["image?", "imagez"]'))
    with pytest.raises(ValueError, match="layer_types"):
        npe2.PluginManifest.from_file(str(broken))


def test_the_plugin_is_discovered_through_the_installed_entry_point():
    from_dist = npe2.PluginManifest.from_distribution(PLUGIN)  # the entry point's manifest
    assert from_dist.package_metadata is not None
    assert from_dist.package_metadata.version == le.__version__
    pm = npe2.PluginManager()  # a fresh one: found by discovery alone
    pm.discover()
    assert PLUGIN in {m.name for m in pm.iter_manifests()}
    found = {
        w.command: (w.layer_types, w.filename_extensions)
        for w in pm.iter_compatible_writers(["image", "labels"])
        if w.plugin_name == PLUGIN
    }
    assert found == {c: WRITERS[c] for c in ("lazyexport.write_ome_zarr", "lazyexport.write_hdf5")}
    expected = {  # (path, layer types) -> the command npe2 picks
        ("a.ome.zarr", ("image", "labels", "labels")): "lazyexport.write_ome_zarr",
        ("a.zarr", ("labels",)): "lazyexport.write_ome_zarr",
        ("a.h5", ("image", "image", "labels")): "lazyexport.write_hdf5",
        ("a.hdf5", ("image",)): "lazyexport.write_hdf5",
        ("a.tif", ("image",)): "lazyexport.write_tiff_image",
        ("a.ome.tiff", ("labels",)): "lazyexport.write_tiff_labels",
    }
    for (path, types), command in expected.items():
        writer, _ = pm.get_writer(path, layer_types=list(types), plugin_name=PLUGIN)
        assert writer is not None and writer.command == command, (path, types)
    for path, kinds in [("a.tif", ["image", "labels"]), ("a.ome.zarr", ["image", "image"])]:
        assert pm.get_writer(path, layer_types=kinds, plugin_name=PLUGIN)[0] is None
    assert pm.get_writer("a.png", layer_types=["image"], plugin_name=PLUGIN)[0] is None


# ---------------------------------------------------------------- round trips


def test_ome_zarr_image_and_labels_round_trip(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05.image import Image

    raw, cells = image((2, 600, 700)), labels((2, 600, 700))  # > 512: a pyramid of 2 levels
    out = tmp_path / "cells.ome.zarr"
    written, writer = npe2.write_get_writer(
        out, [(raw, meta("raw"), "image"), (cells, meta("cells"), "labels")], plugin_name=PLUGIN
    )
    assert writer.command == "lazyexport.write_ome_zarr"
    assert written == [str(out)]
    group = zarr.open_group(str(out), mode="r")
    model = Image.from_zarr(group)  # valid OME-NGFF 0.5, labels with as many levels as the image
    assert model.labels is not None and model.labels.label_paths == ["cells"]
    np.testing.assert_array_equal(read_all(group["0"]), raw)
    np.testing.assert_array_equal(read_all(group["labels/cells/0"]), cells)
    assert as_array(group["labels/cells/0"]).dtype == np.int32
    for node, name in [(group, "raw"), (group["labels/cells"], "cells")]:
        (multiscale,) = zarr_attrs(node)["ome"]["multiscales"]
        assert multiscale["name"] == name
        assert [a["unit"] for a in multiscale["axes"]] == ["micrometer"] * 3
        scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
        assert scales == [SCALE, [2.0, 1.0, 0.5]]  # z (coarser than y/x) is not halved
    assert zarr_attrs(group["labels/cells"])["ome"]["image-label"]["source"] == {"image": "../../"}
    # labels downsample to the most frequent label: no value that was not a label
    assert set(np.unique(read_all(group["labels/cells/1"]))) <= set(np.unique(cells))
    nodes = list(Reader(parse_url(str(out)))())  # what napari-ome-zarr reads
    assert [n.metadata.get("name") for n in nodes if n.data] == ["raw", "cells"]


def test_ome_zarr_replaces_a_store_and_keeps_a_scale_without_unit(tmp_path):
    out = tmp_path / "old.zarr"
    first: list[FullLayerData] = [
        (image(), meta("first"), "image"),
        (labels(), meta("l"), "labels"),
    ]
    npe2.write(out, first, plugin_name=PLUGIN)
    data = da.from_array(image(seed=5), chunks=(2, 16, 16))  # dask data is written lazily
    second: list[FullLayerData] = [(data, meta("second", units="pixel"), "image")]
    assert npe2.write(out, second, plugin_name=PLUGIN) == [str(out)]
    group = zarr.open_group(str(out), mode="r")
    assert "labels" not in group  # the old store was replaced as a whole
    np.testing.assert_array_equal(read_all(group["0"]), data.compute())
    (multiscale,) = zarr_attrs(group)["ome"]["multiscales"]
    assert multiscale["name"] == "second"
    assert all("unit" not in a for a in multiscale["axes"])  # napari's "pixel": no unit invented
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == SCALE
    assert le.open_source(str(out)).attrs["pixel_size"] == dict(zip("zyx", SCALE))


def test_hdf5_layers_become_datasets_named_after_them(tmp_path):
    raw, cells = image(dtype="uint8"), labels(dtype="uint64")
    out = tmp_path / "layers.h5"
    layers: list[FullLayerData] = [
        (raw, meta("raw"), "image"),
        (cells, meta("cells/nuclei", units="nm"), "labels"),
    ]
    assert npe2.write(out, layers, plugin_name=PLUGIN) == [str(out)]
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["cells_nuclei", "raw"]
        np.testing.assert_array_equal(f["raw"][...], raw)
        np.testing.assert_array_equal(f["cells_nuclei"][...], cells)
        assert f["cells_nuclei"].dtype == np.uint64
        np.testing.assert_allclose(f["raw"].attrs["element_size_um"], SCALE)
        np.testing.assert_allclose(
            f["cells_nuclei"].attrs["element_size_um"], np.array(SCALE) / 1e3
        )
        tags = json.loads(f["raw"].attrs["axistags"])["axes"]
        assert [(t["key"], t["resolution"]) for t in tags] == list(zip("zyx", SCALE))
    back = le.open_source(f"{out}/raw")
    assert back.attrs["pixel_size"] == dict(zip("zyx", SCALE))
    assert back.attrs["unit"] == "micrometer"


class Unit:
    """Stands for a pint unit, as napari keeps a layer's units: its text is the unit's name."""

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name


def test_units_as_napari_keeps_them(tmp_path):
    """One unit object per axis; spatial axes in different units are given in micrometers, a
    unit that is not a length is none."""
    raw = image(dtype="uint8")
    layers: list[FullLayerData] = [
        (
            raw,
            meta("mixed", units=None) | {"units": (Unit("nanometer"), *[Unit("µm")] * 2)},
            "image",
        ),
        (raw, meta("seconds", units=Unit("second")), "image"),
    ]
    (out,) = npe2.write(tmp_path / "units.h5", layers, plugin_name=PLUGIN)
    mixed, seconds = le.open_source(f"{out}/mixed"), le.open_source(f"{out}/seconds")
    assert "unit" not in seconds.attrs
    assert mixed.attrs["pixel_size"] == {"z": 0.002, "y": 0.5, "x": 0.25}
    assert mixed.attrs["unit"] == "micrometer"
    with h5py.File(out, "r") as f:
        assert "element_size_um" not in f["seconds"].attrs  # sizes without a length unit
        tags = json.loads(f["seconds"].attrs["axistags"])["axes"]
        assert [t["resolution"] for t in tags] == SCALE


def test_hdf5_replaces_its_datasets_and_leaves_the_others(tmp_path):
    out = tmp_path / "keep.h5"
    with h5py.File(out, "w") as f:
        f["other"] = np.arange(3)
        f["raw"] = np.zeros(3)
    raw = image(shape=(30, 40))
    plain = {"name": "raw", "scale": [1.0, 1.0], "units": ("pixel", "pixel"), "rgb": False}
    npe2.write(out, [(raw, plain, "image")], plugin_name=PLUGIN)
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["other", "raw"]
        np.testing.assert_array_equal(f["other"][...], np.arange(3))
        np.testing.assert_array_equal(f["raw"][...], raw)
        assert "element_size_um" not in f["raw"].attrs  # napari's defaults: no pixel size


def test_tiff_image_round_trip(tmp_path):
    raw = np.random.default_rng(2).random((6, 40, 50), dtype=np.float32)
    out = tmp_path / "raw{1}.tif"  # braces are part of the name, not a template placeholder
    written, writer = npe2.write_get_writer(out, [(raw, meta("raw"), "image")], plugin_name=PLUGIN)
    assert writer.command == "lazyexport.write_tiff_image"
    assert written == [str(out)]
    np.testing.assert_array_equal(tifffile.imread(out), raw)
    with tifffile.TiffFile(out) as tif:
        assert tif.shaped_metadata is not None
        (description,) = tif.shaped_metadata
        assert description["pixel_size"] == dict(zip("zyx", SCALE))
        assert description["unit"] == "micrometer"
        assert description["lazyexport_axes"] == "zyx"
    back = le.open_source(str(out))
    assert back.attrs["pixel_size"] == dict(zip("zyx", SCALE))


def test_ome_tiff_labels_round_trip(tmp_path):
    cells = labels(dtype="int32")
    out = tmp_path / "cells.ome.tif"
    written, writer = npe2.write_get_writer(
        out, [(cells, meta("cells", units="nanometer"), "labels")], plugin_name=PLUGIN
    )
    assert writer.command == "lazyexport.write_tiff_labels"
    back = tifffile.imread(written[0])
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, cells)
    with tifffile.TiffFile(out) as tif:
        assert tif.ome_metadata is not None
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
    assert pixels is not None
    assert [float(cast(str, pixels.get(f"PhysicalSize{a}"))) for a in "ZYX"] == SCALE
    assert {pixels.get(f"PhysicalSize{a}Unit") for a in "ZYX"} == {"nm"}


def test_axes_from_axis_labels_rgb_and_multiscale(tmp_path):
    # named axis labels (napari >= 0.5): time, z, y, x
    movie = image((3, 4, 20, 30))
    named = meta("movie", scale=[1.0, *SCALE], axis_labels=("time", "Z", "y", "x"))
    npe2.write(tmp_path / "movie.ome.zarr", [(movie, named, "image")], plugin_name=PLUGIN)
    group = zarr.open_group(str(tmp_path / "movie.ome.zarr"), mode="r")
    axes = zarr_attrs(group)["ome"]["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["t", "z", "y", "x"]
    np.testing.assert_array_equal(read_all(group["0"]), movie)

    # RGB: channels last in napari, first in OME-Zarr (NGFF's order)
    photo = image((20, 30, 3), dtype="uint8")
    rgb = meta("photo", scale=[0.5, 0.25], rgb=True)
    npe2.write(tmp_path / "photo.zarr", [(photo, rgb, "image")], plugin_name=PLUGIN)
    group = zarr.open_group(str(tmp_path / "photo.zarr"), mode="r")
    (multiscale,) = zarr_attrs(group)["ome"]["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.5, 0.25]
    np.testing.assert_array_equal(read_all(group["0"]), photo.transpose(2, 0, 1))

    # multiscale: the full-resolution level (dask) is written
    full = da.from_array(image((8, 64, 64)), chunks=(4, 32, 32))
    levels = [full, full[:, ::2, ::2]]
    written = npe2.write(
        tmp_path / "big.h5", [(levels, meta("big", multiscale=True), "image")], plugin_name=PLUGIN
    )
    with h5py.File(written[0], "r") as f:
        np.testing.assert_array_equal(f["big"][...], full.compute())


def test_writers_called_directly_take_layer_data(tmp_path):
    """The functions themselves, as the manifest's python_name names them."""
    cells = labels(shape=(10, 12)).astype(bool)
    plain = {"name": "mask", "scale": [1.0, 1.0]}
    (path,) = writers.write_tiff_labels(str(tmp_path / "mask.tiff"), cells, plain)
    back = tifffile.imread(path)
    assert back.dtype == np.uint8  # bool labels as 0 / 1
    np.testing.assert_array_equal(back, cells.astype(np.uint8))
    assert writers.write_hdf5(
        str(tmp_path / "m.hdf5"), [(cells.astype("uint16"), plain, "labels")]
    ) == [str(tmp_path / "m.hdf5")]
    with h5py.File(tmp_path / "m.hdf5", "r") as f:
        np.testing.assert_array_equal(f["mask"][...], cells)


# ---------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda d: writers.write_hdf5(f"{d}/x.h5", [(labels() * 0.5, meta("f"), "labels")]),
            FormatError,
            "labels layer 'f' holds float64 values, not integer labels",
        ),
        (
            lambda d: writers.write_ome_zarr(
                f"{d}/x.ome.zarr", [(image(), meta("a"), "image"), (image(), meta("b"), "image")]
            ),
            FormatError,
            "one image layer",
        ),
        (
            lambda d: writers.write_hdf5(
                f"{d}/x.h5", [(image(), meta("a/b"), "image"), (labels(), meta("a_b"), "labels")]
            ),
            FormatError,
            "same dataset 'a_b'; rename one",
        ),
        (
            lambda d: writers.write_tiff_image(f"{d}/x.png", image(), meta("a")),
            FormatError,
            "saves to names ending in .tif or .tiff",
        ),
        (
            lambda d: writers.write_ome_zarr(
                f"{d}/x.ome.zarr", [(np.zeros((2,) * 6, "uint8"), {"name": "six"}, "image")]
            ),
            AxisError,
            "layer 'six' has 6 dimensions",
        ),
        (
            lambda d: writers.write_ome_zarr(
                f"{d}/x.ome.zarr",
                [
                    (image(), meta("raw"), "image"),
                    (labels(), meta("q", axis_labels=("q", "y", "x")), "labels"),
                ],
            ),
            FormatError,
            "OME-Zarr has only the axes t, c, z, y, x",
        ),
    ],
)
def test_mistakes_get_one_line_and_write_nothing(tmp_path, call, error, match):
    with pytest.raises(error, match=match) as info:
        call(tmp_path)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # every layer is checked before the first is written


def test_npe2_finds_no_writer_for_other_extensions(tmp_path):
    with pytest.raises(ValueError, match="No writer found"):
        npe2.write(tmp_path / "x.png", [(image(), meta("a"), "image")], plugin_name=PLUGIN)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", writers.__all__)
def test_docstrings_are_numpydoc(name):
    optional = {"SA01", "EX01", "ES01"}  # as tests/test_docstrings.py
    errors = [
        f"{code}: {text}"
        for code, text in validate(f"lazyexport.napari.{name}")["errors"]
        if code not in optional
    ]
    assert not errors, "\n".join(errors)
