"""OME-Zarr, N5, multipage TIFF, PNG sequence and npy: round trips through independent readers
against a numpy reference of the same cutout and transforms, pixel sizes, and pyramids."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, cast
from xml.etree import ElementTree

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

import lazyexport as le
from helpers.zarr_nodes import as_array, read_all, v2_metadata, v3_metadata, zarr_attrs
from lazyexport.cli import main
from lazyexport.demo import sample_volume
from lazyexport.errors import FormatError, SettingsError
from lazyexport.formats import ome_zarr as omz
from lazyexport.formats import pyramid as pyr
from lazyexport.formats import tiff as tiff_format
from lazyexport.plan import block_shape

PIXEL = {"z": 0.5, "y": 0.1, "x": 0.1}
ROI = {"z": (2, 11), "y": (5, 85), "x": (3, 70)}


@pytest.fixture(scope="module")
def volume():
    return sample_volume(shape=(12, 90, 70), chunks=(4, 32, 32))


@pytest.fixture(scope="module")
def reference(volume):
    """The cutout in czyx order, float32, computed directly with numpy."""
    return volume.values[2:11, 5:85, 3:70].transpose(3, 0, 1, 2)


def uint8_of(ref):
    return np.clip(np.rint(ref.astype(np.float32) * np.float32(255)), 0, 255).astype(np.uint8)


def settings(fmt, output, **kw):
    return le.ExportSettings(
        format=fmt,
        output=str(output),
        roi=kw.pop("roi", ROI),
        axis_order=kw.pop("axis_order", "czyx"),
        **kw,
    )


# ---------------------------------------------------------------- OME-Zarr


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_ome_zarr_round_trip_and_metadata(tmp_path, volume, reference, zarr_format):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    result = le.export(
        volume,
        settings(
            "ome-zarr",
            tmp_path / "out.ome.zarr",
            zarr_format=zarr_format,
            pixel_size=PIXEL,
            levels=3,
        ),
    )
    group = zarr.open_group(str(result.output), mode="r")
    assert group.metadata.zarr_format == zarr_format
    multiscale: Any  # OME-NGFF 0.5's or 0.4's model
    if zarr_format == 3:
        from ome_zarr_models.v05.image import Image as Image05

        model = Image05.from_zarr(group)
        multiscale = (
            model.ome_attributes.multiscales[0]
            if hasattr(model, "ome_attributes")
            else model.attributes.ome.multiscales[0]
        )
        assert v3_metadata(group["0"]).dimension_names == ("c", "z", "y", "x")
    else:
        from ome_zarr_models.v04.image import Image as Image04

        multiscale = Image04.from_zarr(group).attributes.multiscales[0]
        assert v2_metadata(group["0"]).dimension_separator == "/"
    assert [a.name for a in multiscale.axes] == ["c", "z", "y", "x"]
    assert [a.type for a in multiscale.axes] == ["channel", "space", "space", "space"]
    assert [a.unit for a in multiscale.axes] == [None, "micrometer", "micrometer", "micrometer"]
    scales = [d.coordinateTransformations[0].scale for d in multiscale.datasets]
    assert scales == [
        [1.0, 0.5, 0.1, 0.1],
        [1.0, 0.5, 0.2, 0.2],
        [1.0, 0.5, 0.4, 0.4],
    ]  # z too coarse to halve

    nodes = list(Reader(parse_url(str(result.output)))())
    level0 = np.asarray(nodes[0].data[0])
    np.testing.assert_array_equal(level0, reference)
    assert [tuple(d.shape) for d in nodes[0].data] == [
        (2, 9, 80, 67),
        (2, 9, 40, 34),
        (2, 9, 20, 17),
    ]
    back = le.open_exported(result)
    assert back.dims == ("c", "z", "y", "x")
    assert back.attrs["pixel_size"] == PIXEL
    np.testing.assert_array_equal(back.values, reference)


def _reference_downsample(arr, factors, how):
    """Window by window with plain Python: mean, or the most frequent value (ties: smallest)."""
    out_shape = tuple(-(-n // f) for n, f in zip(arr.shape, factors))
    out = np.empty(out_shape, dtype=arr.dtype)
    for index in np.ndindex(*out_shape):
        window = arr[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))].ravel()
        if how == "mean":
            out[index] = window.astype(np.float64).mean()
        else:
            counts = Counter(window.tolist())
            top = max(counts.values())
            out[index] = min(v for v, c in counts.items() if c == top)
    return out


@pytest.mark.parametrize("kind", ["float", "labels"])
def test_pyramid_levels_downsample_the_level_below(tmp_path, kind):
    rng = np.random.default_rng(1)
    shape = (9, 37, 45)  # odd sizes: windows cut short at the ends
    if kind == "float":
        data = rng.random(shape, dtype=np.float32)
    else:
        data = rng.integers(0, 4, shape).astype(np.uint16)
    source = xr.DataArray(da.from_array(data, chunks=(4, 16, 16)), dims=("z", "y", "x"))
    labels: dict[str, Any] = (
        {"result_type": "Labels"} if kind == "labels" else {}
    )  # integers are averaged unless labels
    result = le.export(
        source,
        le.ExportSettings(
            format="ome-zarr",
            output=str(tmp_path / "p.ome.zarr"),
            levels=4,
            chunks={"z": 4, "y": 8, "x": 8},
            **labels,
        ),
        memory_limit="16MiB",
    )
    group = zarr.open_group(str(result.output), mode="r")
    image = zarr_attrs(group)["ome"]["multiscales"][0]
    assert [d["path"] for d in image["datasets"]] == ["0", "1", "2", "3"]
    expected_shapes = [(9, 37, 45), (5, 19, 23), (3, 10, 12), (2, 5, 6)]  # isotropic: z halves too
    assert [as_array(group[str(i)]).shape for i in range(4)] == expected_shapes
    assert [d["coordinateTransformations"][0]["scale"] for d in image["datasets"]] == [
        [1.0, 1.0, 1.0],
        [2.0, 2.0, 2.0],
        [4.0, 4.0, 4.0],
        [8.0, 8.0, 8.0],
    ]
    np.testing.assert_array_equal(read_all(group["0"]), data)
    how = "mean" if kind == "float" else "mode"
    for level in range(1, 4):
        below = read_all(group[str(level - 1)])
        expected = _reference_downsample(below, (2, 2, 2), how)
        got = read_all(group[str(level)])
        assert got.dtype == data.dtype
        if kind == "float":
            np.testing.assert_allclose(got, expected, rtol=1e-6)
        else:
            np.testing.assert_array_equal(got, expected)
            assert set(np.unique(got)) <= set(np.unique(data))


def test_downsample_mode_ties_and_partial_windows():
    block = np.array([[1, 2, 7], [2, 1, 7]], dtype=np.uint8)  # window 1: two 1s, two 2s -> 1
    np.testing.assert_array_equal(pyr.downsample(block, (2, 2), "mode"), [[1, 7]])
    np.testing.assert_array_equal(pyr.downsample(block, (2, 2), "nearest"), [[1, 7]])
    floats = np.array([[0.0, 1.0, 5.0]], dtype=np.float32)
    np.testing.assert_allclose(pyr.downsample(floats, (1, 2), "mean"), [[0.5, 5.0]])


def test_default_levels_end_at_a_level_that_fits_512():
    levels = omz.pyramid(("z", "y", "x"), (10, 3000, 1100), {}, None)
    assert max(levels[-1].shape[1:]) <= 512 < max(levels[-2].shape[1:])
    assert len(levels) == 4
    assert all(lv.factors[0] == 2 for lv in levels[1:])  # no pixel size: isotropic, z halves


def test_ome_zarr_axis_order(tmp_path, volume):
    with pytest.raises(FormatError, match="czyx"):
        le.export(
            volume,
            le.ExportSettings(
                format="ome-zarr", output=str(tmp_path / "a.ome.zarr"), axis_order="zyxc"
            ),
        )
    assert not list(tmp_path.iterdir())
    result = le.export(
        volume, le.ExportSettings(format="ome-zarr", output=str(tmp_path / "b.ome.zarr"), levels=1)
    )
    assert result.axes == ("c", "z", "y", "x")
    assert any("czyx" in note for note in result.notes)


# ---------------------------------------------------------------- TIFF


@pytest.mark.parametrize("flavor", ["plain", "imagej", "ome"])
def test_tiff_flavors(tmp_path, volume, reference, flavor):
    result = le.export(
        volume,
        settings(
            "tiff",
            tmp_path / "out.tif",
            tiff_flavor=flavor,
            pixel_size=PIXEL,
            renormalize=((0, 1), (0, 255)),
            dtype="uint8",
        ),
    )
    expected = uint8_of(reference)
    with tifffile.TiffFile(result.output) as tif:
        series = tif.series[0]
        data = series.asarray()
        assert tif.is_imagej == (flavor == "imagej")
        assert tif.is_ome == (flavor == "ome")
        assert not tif.is_bigtiff
        assert len(tif.pages) == 2 * 9
        xres, yres = tif.pages.first.resolution
        if flavor == "imagej":
            assert series.axes == "ZCYX"  # ImageJ's TZCYX order
            assert tif.imagej_metadata is not None
            np.testing.assert_array_equal(data, expected.transpose(1, 0, 2, 3))
            assert tif.imagej_metadata["spacing"] == pytest.approx(0.5)
            assert tif.imagej_metadata["unit"] == "micron"
            assert (xres, yres) == pytest.approx((10.0, 10.0))
        else:
            assert series.axes == "CZYX"
            np.testing.assert_array_equal(data, expected)
        if flavor == "ome":
            assert tif.ome_metadata is not None
            pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
            assert pixels is not None
            assert float(cast(str, pixels.get("PhysicalSizeZ"))) == pytest.approx(0.5)
            assert float(cast(str, pixels.get("PhysicalSizeX"))) == pytest.approx(0.1)
            assert pixels.get("PhysicalSizeXUnit") == "µm"
        if flavor == "plain":
            assert (xres, yres) == pytest.approx((1e5, 1e5))  # pixels per centimeter
    back = le.open_exported(result)
    # the result's axes are the file's: ImageJ's order, which the plan's note gives
    stored = ("z", "c", "y", "x") if flavor == "imagej" else ("c", "z", "y", "x")
    assert back.dims == result.axes == stored
    assert any("order 'zcyx'" in note for note in result.notes) == (flavor == "imagej")
    assert back.attrs["pixel_size"] == pytest.approx(PIXEL)
    np.testing.assert_array_equal(
        back.values, expected.transpose(["czyx".index(a) for a in stored])
    )
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]  # the raw temporary file is gone


def test_tiff_compressed_large_planes_are_tiled(tmp_path, volume, reference, monkeypatch):
    monkeypatch.setattr(tiff_format, "TILED_PLANE_BYTES", 1000)
    monkeypatch.setattr(tiff_format, "TILE", 32)
    result = le.export(
        volume, settings("tiff", tmp_path / "t.tif", compression="zlib", axis_order="zcyx")
    )
    with tifffile.TiffFile(result.output) as tif:
        assert (
            not tif.is_bigtiff
        )  # compressed, but far from 4 GiB: classic TIFF (issue 13, item 18)
        assert tif.pages.first.is_tiled and tif.pages.first.tilewidth == 32
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(tif.series[0].asarray(), reference.transpose(1, 0, 2, 3))


def test_imagej_refuses_float64(tmp_path, volume):
    with pytest.raises(FormatError, match="float64"):
        le.export(
            volume,
            le.ExportSettings(
                format="tiff", tiff_flavor="imagej", dtype="float64", output=str(tmp_path / "a.tif")
            ),
        )


def test_failed_tiff_export_leaves_nothing(tmp_path):
    def boom(block, block_info=None):
        if block_info[None]["chunk-location"][0] == 3:
            raise RuntimeError("read failure")
        return block

    data = da.zeros((6, 40, 40), chunks=(1, 40, 40), dtype="uint8").map_blocks(boom, dtype="uint8")
    with pytest.raises(RuntimeError, match="read failure"):
        le.export(
            xr.DataArray(data, dims=("z", "y", "x")),
            le.ExportSettings(format="tiff", output=str(tmp_path / "x.tif")),
        )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- npy


def test_npy_round_trip(tmp_path, volume, reference):
    result = le.export(
        volume,
        settings("npy", tmp_path / "out.npy", chunks={"y": 16, "x": 24}),
        memory_limit="16MiB",
    )
    np.testing.assert_array_equal(np.load(result.output), reference)
    np.testing.assert_array_equal(le.open_exported(result).values, reference)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


# ---------------------------------------------------------------- PNG


def test_png_sequence_rgb_uint8(tmp_path, volume, reference):
    from PIL import Image

    rgb = xr.concat([volume, volume.isel(c=[0])], dim="c")  # three channels
    result = le.export(
        rgb,
        settings(
            "png-sequence",
            tmp_path / "png" / "s{slice_index}.png",
            renormalize=((0, 1), (0, 255)),
            dtype="uint8",
        ),
    )
    expected = uint8_of(np.concatenate([reference, reference[:1]]))  # czyx
    assert [p.name for p in result.paths] == [f"s{i:02d}.png" for i in range(2, 11)]
    for k, path in enumerate(result.paths):
        with Image.open(path) as img:
            assert img.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(img), expected[:, k].transpose(1, 2, 0))
    back = le.open_exported(result)
    assert back.dims == ("c", "z", "y", "x")
    np.testing.assert_array_equal(back.values, expected)
    glob = le.open_source(str(tmp_path / "png" / "s*.png"))
    assert glob.dims == ("c", "z", "y", "x")


def test_png_sequence_uint16_gray(tmp_path, volume, reference):
    from PIL import Image, PngImagePlugin

    result = le.export(
        volume,
        settings(
            "png-sequence",
            tmp_path / "g_{slice_index}.png",
            axis_order="zyx",
            roi={**ROI, "c": (0, 1)},
            renormalize=((0, 1), (0, 65535)),
            dtype="uint16",
        ),
    )
    expected = np.clip(np.rint(reference[0] * np.float32(65535)), 0, 65535).astype(
        np.uint16
    )  # float32 math, as the export
    with Image.open(result.paths[4]) as img:
        assert isinstance(img, PngImagePlugin.PngImageFile)
        assert np.asarray(img).dtype == np.uint16
        np.testing.assert_array_equal(np.asarray(img), expected[4])
        assert json.loads(img.text["lazyexport"])["lazyexport_axes"] == "zyx"
    np.testing.assert_array_equal(le.open_exported(result).values, expected)


@pytest.mark.parametrize(
    "dtype, channels, message",
    [("float32", 1, "float32 data with 1 channel"), ("uint16", 3, "uint16 data with 3 channel")],
)
def test_png_refuses_what_it_cannot_hold(tmp_path, volume, dtype, channels, message):
    data = xr.concat([volume] * 2, dim="c").isel(c=slice(0, channels))
    with pytest.raises(FormatError, match=message):
        le.export(
            data,
            le.ExportSettings(
                format="png-sequence", dtype=dtype, output=str(tmp_path / "s{slice_index}.png")
            ),
        )


# ---------------------------------------------------------------- N5


@pytest.mark.parametrize("compression, internal", [("gzip", ""), ("raw", "/setup0/data")])
def test_n5_round_trip_with_tensorstore(tmp_path, volume, reference, compression, internal):
    import tensorstore as ts

    result = le.export(
        volume,
        settings(
            "n5",
            f"{tmp_path}/out.n5{internal}",
            compression=compression,
            pixel_size=PIXEL,
            chunks={"z": 4, "y": 32, "x": 16},
        ),
    )
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(result.output)},
            "path": result.internal,
        }
    ).result()
    assert store.domain.labels == ("x", "y", "z", "c")
    assert store.chunk_layout.read_chunk.shape == (16, 32, 4, 2)
    np.testing.assert_array_equal(store.read().result(), reference.transpose(3, 2, 1, 0))
    attrs = json.loads((result.output / result.internal / "attributes.json").read_text())
    assert attrs["compression"]["type"] == compression
    assert attrs["pixelResolution"] == {"unit": "µm", "dimensions": [0.1, 0.1, 0.5, 1.0]}
    back = le.open_exported(result)
    assert back.dims == ("c", "z", "y", "x")
    assert back.attrs["pixel_size"] == PIXEL
    np.testing.assert_array_equal(back.values, reference)
    np.testing.assert_array_equal(
        back[:, 3:7, 30:50, 10:40].values, reference[:, 3:7, 30:50, 10:40]
    )


def test_n5_source_written_by_tensorstore(tmp_path):
    import tensorstore as ts

    data = np.arange(5 * 30 * 20, dtype=np.int16).reshape(5, 30, 20)
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "ts.n5")},
            "path": "vol",
            "create": True,
            "metadata": {
                "dimensions": [20, 30, 5],
                "blockSize": [8, 8, 2],
                "dataType": "int16",
                "compression": {"type": "gzip"},
            },
        }
    ).result()
    store.write(data.transpose(2, 1, 0)).result()
    src = le.open_source(str(tmp_path / "ts.n5"))  # the one dataset is found
    assert src.shape == (5, 30, 20)
    np.testing.assert_array_equal(src.values, data)


def test_n5_refuses_bool(tmp_path):
    with pytest.raises(FormatError, match="bool"):
        le.export(
            np.zeros((3, 4, 5), bool), le.ExportSettings(format="n5", output=str(tmp_path / "b.n5"))
        )


# ---------------------------------------------------------------- pixel sizes from sources


def test_pixel_size_from_an_imagej_tiff_becomes_the_ome_zarr_scale(tmp_path):
    data = np.arange(4 * 16 * 12, dtype=np.uint16).reshape(4, 16, 12)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 1.5, "unit": "micron"},
    )
    src = le.open_source(str(tmp_path / "ij.tif"))
    assert src.attrs["pixel_size"] == pytest.approx({"z": 1.5, "y": 0.25, "x": 0.25})
    result = le.export(
        src, le.ExportSettings(format="ome-zarr", output=str(tmp_path / "o.ome.zarr"), levels=1)
    )
    image = zarr_attrs(zarr.open_group(str(result.output), mode="r"))["ome"]["multiscales"][0]
    assert image["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx(
        [1.5, 0.25, 0.25]
    )
    # the user's setting wins over the source's, per axis, and is converted with the unit
    result = le.export(
        src,
        le.ExportSettings(
            format="hdf5", output=str(tmp_path / "o.h5"), pixel_size={"z": 2000}, unit="nm"
        ),
    )
    with h5py.File(result.output) as f:
        np.testing.assert_allclose(f["exported_data"].attrs["element_size_um"], [2.0, 0.25, 0.25])
    assert le.open_exported(result).attrs["pixel_size"] == pytest.approx(
        {"z": 2.0, "y": 0.25, "x": 0.25}
    )


def test_pixel_size_from_xarray_coordinates():
    arr = xr.DataArray(
        np.zeros((3, 4, 5)),
        dims=("z", "y", "x"),
        coords={"z": [0.0, 2.0, 4.0], "y": np.arange(4) * 0.5, "x": np.arange(5) * 0.5},
    )
    assert le.open_source(arr).attrs["pixel_size"] == {"z": 2.0, "y": 0.5, "x": 0.5}


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"unit": "parsec"}, "unknown unit"),
        ({"pixel_size": {"z": -1}}, "positive"),
        ({"pixel_size": {"c": 1}}, "spatial"),
        ({"levels": 0}, "levels"),
        ({"tiff_flavor": "bigtiff"}, "TIFF flavor"),
        ({"downsample": "median"}, "downsample"),
    ],
)
def test_new_settings_are_validated(kw, message):
    with pytest.raises(SettingsError, match=message):
        le.ExportSettings(**kw)


# ---------------------------------------------------------------- the writer interface


def test_writers_are_told_the_output_in_a_frozen_spec(tmp_path):
    """A writer gets an OutputSpec, not the plan: what the planner decided, immutable; its
    checks return notes for the planner to add rather than changing the plan."""
    data = np.arange(4 * 1200 * 1100, dtype=np.uint16).reshape(4, 1200, 1100)
    plan = le.plan(
        le.open_source(data, axes="zyx"),
        le.ExportSettings(
            format="ome-zarr", output=str(tmp_path / "o.ome.zarr"), pixel_size={"x": 0.5}
        ),
    )
    spec = plan.spec
    assert (
        spec.format,
        spec.output,
        spec.paths,
        spec.shape,
        spec.dtype,
        spec.axes,
        spec.chunks,
    ) == (
        "ome-zarr",
        plan.output,
        tuple(plan.paths),
        plan.shape,
        plan.dtype,
        plan.axes,
        plan.chunks,
    )
    assert (
        spec.compression == "zstd"
        and spec.zarr_format == 3
        and spec.sizes == {"z": 4, "y": 1200, "x": 1100}
    )
    with pytest.raises(AttributeError):
        spec.chunks = (1, 1, 1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.pixel_size["y"] = 0.5  # type: ignore[index]
    notes = list(plan.notes)
    found = plan.writer.check(spec)
    assert (
        found
        and list(plan.notes) == notes
        and [n for n in notes if "average the integer data" in n] == list(found)
    )
    # the pyramid's blocks are sized by the planner, within the export's budget per block
    assert spec.block_shape((1, 64, 64), (4, 600, 550), 8) == block_shape(
        (1, 64, 64), (4, 600, 550), 8, plan.pyramid_budget()
    )


# ---------------------------------------------------------------- CLI


def test_cli_formats_and_new_options(tmp_path, capsys):
    assert main(["formats"]) == 0
    listing = capsys.readouterr().out
    for name in ("ome-zarr", "n5", "tiff", "png-sequence", "npy"):
        assert name in listing
    assert "tiff_flavor" in listing and "levels" in listing
    np.save(tmp_path / "src.npy", np.ones((3, 20, 20), dtype=np.uint8))
    assert (
        main(
            [
                "export",
                str(tmp_path / "src.npy"),
                "--format",
                "tiff",
                "--tiff-flavor",
                "imagej",
                "--pixel-size",
                "z=2,y=0.5,x=0.5",
                "--output",
                str(tmp_path / "o.tif"),
                "-q",
            ]
        )
        == 0
    )
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata is not None
        assert tif.imagej_metadata["spacing"] == 2.0
    assert (
        main(
            [
                "export",
                str(tmp_path / "src.npy"),
                "--format",
                "ome-zarr",
                "--levels",
                "2",
                "--output",
                str(tmp_path / "o.ome.zarr"),
                "-q",
            ]
        )
        == 0
    )
    assert as_array(zarr.open_group(str(tmp_path / "o.ome.zarr"), mode="r")["1"]).shape == (
        2,
        10,
        10,
    )
    assert (
        main(
            [
                "export",
                str(tmp_path / "src.npy"),
                "--format",
                "png-sequence",
                "--dtype",
                "float32",
                "--output",
                str(tmp_path / "p{slice_index}.png"),
                "-q",
            ]
        )
        == 2
    )
    assert "float32" in capsys.readouterr().err
