"""Microscopy files through bioio (lazyexport[microscopy]): a CZI written by pylibCZIrw (Zeiss's
own writer) and an OME-TIFF written by tifffile, each made here, exported and compared with
what bioio itself reads; their scenes, physical pixel sizes and channel names carried into
OME-Zarr, OME-TIFF and ImageJ TIFF; and the one-line messages for a missing reader."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from bioio import BioImage
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05
from pylibCZIrw import czi as pyczi

import lazyexport as le
from helpers import run_cli
from helpers.zarr_nodes import read_all, zarr_attrs
from lazyexport import cli
from lazyexport.errors import SourceError
from lazyexport.sources.facts import source_facts

# bioio-ome-tiff 1.4 passes ome-types an argument it deprecated
pytestmark = pytest.mark.filterwarnings("ignore:As of version 0.4.0, the parser argument")

CHANNELS = ["DAPI", "GFP", "mCherry"]
CZI_SIZES = {"z": 1.0, "y": 0.2, "x": 0.2}  # micrometers
OME_CHANNELS = ["Hoechst", "Actin"]
OME_SIZES = {"z": 1.5, "y": 0.25, "x": 0.25}


def write_czi(path: Path, scenes: dict[str, np.ndarray]) -> None:
    """A CZI of one scene per entry (``czyx`` uint16 each, side by side), with channel names
    and a scaling; the scenes are named in the metadata, as ZEN names them."""
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for s, data in enumerate(scenes.values()):
            for c in range(data.shape[0]):
                for z in range(data.shape[1]):
                    czi.write(
                        data[c, z][..., None],
                        plane={"T": 0, "C": c, "Z": z},
                        scene=s,
                        location=(s * 1000, 0),
                    )
        czi.write_metadata(
            channel_names=dict(enumerate(CHANNELS)),
            scale_x=CZI_SIZES["x"] * 1e-6,  # meters
            scale_y=CZI_SIZES["y"] * 1e-6,
            scale_z=CZI_SIZES["z"] * 1e-6,
        )
    named = "".join(f'<Scene Index="{i}" Name="{name}"/>' for i, name in enumerate(scenes))
    with pyczi.edit_czi(str(path)) as editor, editor.edit_session() as builder:
        xml = builder.get_xml()
        builder.set_xml(xml.replace("</Channels>", f"</Channels><S><Scenes>{named}</Scenes></S>"))


def write_ome_tiff(path: Path, images: list[np.ndarray], names=OME_CHANNELS, unit="µm") -> None:
    """An OME-TIFF of one image (``czyx``) per entry, with sizes and channel names."""
    with tifffile.TiffWriter(path, ome=True) as tif:
        for data in images:
            meta: dict = {"axes": "CZYX"}
            for axis, size in OME_SIZES.items():
                meta[f"PhysicalSize{axis.upper()}"] = size * (1000 if unit == "nm" else 1)
                meta[f"PhysicalSize{axis.upper()}Unit"] = unit
            if names:
                meta["Channel"] = {"Name": list(names)}
            tif.write(data, photometric="minisblack", metadata=meta)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("microscopy")
    rng = np.random.default_rng(7)
    czi = {name: rng.integers(0, 60000, (3, 4, 20, 30), dtype=np.uint16) for name in ("a", "b")}
    czi = {"left": czi["a"], "right": czi["b"]}
    write_czi(d / "cells.czi", czi)
    ome = [rng.integers(0, 255, (2, 3, 16, 24), dtype=np.uint8) for _ in range(2)]
    write_ome_tiff(d / "cells.ome.tif", ome)
    return d, czi, ome


def bioio_data(path: Path, scene=0) -> np.ndarray:
    img = BioImage(str(path))
    img.set_scene(scene)
    return img.data


def level0(store: Path) -> tuple[np.ndarray, dict]:
    group = zarr.open_group(str(store), mode="r")
    attrs = dict(zarr_attrs(group))
    meta = attrs.get("ome", attrs)
    return np.asarray(read_all(group[meta["multiscales"][0]["datasets"][0]["path"]])), meta


def scale(meta: dict) -> list[float]:
    (transform,) = meta["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    return transform["scale"]


def labels(meta: dict) -> list[str]:
    return [c["label"] for c in meta["omero"]["channels"]]


def test_a_czi_exports_to_ome_zarr_with_its_sizes_and_channel_names(files):
    d, czi, _ = files
    src = le.open_source(d / "cells.czi")
    assert src.dims == ("t", "c", "z", "y", "x") and src.shape == (1, 3, 4, 20, 30)
    assert src.attrs["channel_names"] == CHANNELS and src.attrs["pixel_size"] == CZI_SIZES
    out = d / "czi.ome.zarr"
    result = le.export(src, le.ExportSettings(format="ome-zarr", output=str(out)))
    data, meta = level0(out)
    expected = bioio_data(d / "cells.czi")
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(data[0], czi["left"])  # and bioio read what was written
    assert scale(meta) == [1.0, 1.0, CZI_SIZES["z"], CZI_SIZES["y"], CZI_SIZES["x"]]
    assert [a.get("unit") for a in meta["multiscales"][0]["axes"]][2:] == ["micrometer"] * 3
    assert labels(meta) == CHANNELS
    Image05.from_zarr(zarr.open_group(str(out), mode="r"))  # valid OME-NGFF 0.5
    back = le.open_exported(result)  # lazyexport reads the labels back
    assert back.attrs["channel_names"] == CHANNELS


def test_an_ome_tiff_read_through_bioio_is_bioios_array_with_its_metadata(files):
    d, _, ome = files
    src = le.open_source(d / "cells.ome.tif", scene=0)  # a scene: read through bioio
    assert src.dims == ("t", "c", "z", "y", "x")
    np.testing.assert_array_equal(src.values, bioio_data(d / "cells.ome.tif"))
    np.testing.assert_array_equal(src.values[0], ome[0])
    assert src.attrs["channel_names"] == OME_CHANNELS and src.attrs["pixel_size"] == OME_SIZES
    out = d / "ome.ome.zarr"
    le.export(src, le.ExportSettings(format="ome-zarr", zarr_format=2, output=str(out)))
    data, meta = level0(out)
    np.testing.assert_array_equal(data, bioio_data(d / "cells.ome.tif"))
    assert "omero" in zarr.open_group(str(out), mode="r").attrs  # 0.4: beside multiscales
    assert scale(meta) == [1.0, 1.0, 1.5, 0.25, 0.25] and labels(meta) == OME_CHANNELS
    Image04.from_zarr(zarr.open_group(str(out), mode="r"))  # valid OME-NGFF 0.4


def test_the_plain_command_line_carries_an_ome_tiffs_channel_names_and_sizes(files, tmp_path):
    d, _, ome = files
    out = tmp_path / "out.ome.zarr"
    run = run_cli("export", str(d / "cells.ome.tif"), "--format", "ome-zarr", "--output", str(out))
    assert run.returncode == 0, run.stderr
    data, meta = level0(out)
    np.testing.assert_array_equal(data, bioio_data(d / "cells.ome.tif")[0])  # czyx: no t
    assert labels(meta) == OME_CHANNELS
    assert scale(meta) == [1.0, 1.5, 0.25, 0.25]


def test_lazyexports_own_tiff_reader_finds_ome_channel_names_without_bioio(
    files, monkeypatch, tmp_path
):
    d, _, _ = files
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if bioio were not installed
    src = le.open_source(d / "cells.ome.tif")
    assert src.dims == ("c", "z", "y", "x") and "scene" not in src.attrs
    assert src.attrs["channel_names"] == OME_CHANNELS and src.attrs["pixel_size"] == OME_SIZES
    unnamed = tmp_path / "unnamed.ome.tif"
    write_ome_tiff(unnamed, [np.zeros((2, 1, 4, 4), np.uint8)], names=None)
    assert "channel_names" not in le.open_source(unnamed).attrs  # none invented


def test_a_scene_is_chosen_by_name_or_index(files, tmp_path):
    d, czi, _ = files
    first = le.open_source(d / "cells.czi")
    by_name = le.open_source(d / "cells.czi", scene="right")
    by_index = le.open_source(d / "cells.czi", scene=1)
    assert first.attrs["scene"] == "left" and first.attrs["scenes"] == ["left", "right"]
    assert by_name.attrs["scene"] == by_index.attrs["scene"] == "right"
    np.testing.assert_array_equal(by_name.values, bioio_data(d / "cells.czi", "right"))
    np.testing.assert_array_equal(by_index.values[0], czi["right"])
    np.testing.assert_array_equal(first.values[0], czi["left"])
    ome = le.open_source(d / "cells.ome.tif", scene="Image:1")  # an OME-TIFF's second image
    np.testing.assert_array_equal(ome.values, bioio_data(d / "cells.ome.tif", 1))
    out = tmp_path / "right.ome.zarr"
    run = run_cli(
        "export",
        str(d / "cells.czi"),
        "--scene",
        "right",
        "--format",
        "ome-zarr",
        "--output",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(level0(out)[0][0], czi["right"])


def test_info_shows_the_scenes_and_the_channels(files):
    d, _, _ = files
    run = run_cli("info", str(d / "cells.czi"), "--scene", "1")
    assert run.returncode == 0, run.stderr
    assert "scene     right (scenes: left, right)" in run.stdout
    assert "channels  DAPI, GFP, mCherry" in run.stdout


def test_a_scene_the_file_does_not_have_is_one_line_listing_its_scenes(files, tmp_path):
    d, _, _ = files
    with pytest.raises(SourceError, match=r"has no scene 'middle'; its scenes are 0 'left', 1 'r"):
        le.open_source(d / "cells.czi", scene="middle")
    with pytest.raises(SourceError, match="has no scene 2; its scenes are 0 'left', 1 'right'"):
        le.open_source(d / "cells.czi", scene=2)
    np.save(tmp_path / "v.npy", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(SourceError, match="has no scenes: a scene is chosen in microscopy files"):
        le.open_source(tmp_path / "v.npy", scene=0)
    run = run_cli(
        "export", str(d / "cells.czi"), "--scene", "5", "--output", str(tmp_path / "o.h5")
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"error: {d / 'cells.czi'} has no scene '5'; its scenes are 0 'left', 1 'right'"
    )
    assert not (tmp_path / "o.h5").exists()


def test_a_missing_reader_plugin_or_bioio_is_one_line_naming_what_to_install(
    files, tmp_path, monkeypatch
):
    d, _, _ = files
    dv = tmp_path / "stack.dv"  # bioio-dv is in no extra of lazyexport's: not installed
    dv.write_bytes(b"\0" * 1024)
    with pytest.raises(SourceError) as info:
        le.open_source(dv)
    assert str(info.value) == "no bioio reader for .dv files: pip install bioio-dv"
    broken = tmp_path / "broken.czi"  # the plugin is installed: the file is at fault
    broken.write_bytes(b"ZISRAWFILE" + b"\0" * 20)
    with pytest.raises(
        SourceError, match=r"broken.czi cannot be read by bioio-czi, the bioio"
    ) as e:
        le.open_source(broken)
    assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "bioio", None)  # bioio itself not installed
    with pytest.raises(SourceError) as info:
        le.open_source(d / "cells.czi")
    assert str(info.value) == "reading .czi files needs bioio: pip install 'lazyexport[microscopy]'"


def test_a_suffix_only_an_installed_plugin_claims_is_read_through_it(files, monkeypatch):
    import bioio.bio_image
    import bioio.plugins

    d, _, ome = files
    copy = d / "cells.ome.tf2"
    copy.write_bytes((d / "cells.ome.tif").read_bytes())
    real = bioio.plugins.get_plugins

    def with_tf2(use_cache: bool):  # a plugin that claims .ome.tf2 too
        found = dict(real(use_cache))
        found[".ome.tf2"] = found[".ome.tif"]
        return found

    with pytest.raises(SourceError, match="cannot tell the format of"):
        le.open_source(copy)
    monkeypatch.setattr(bioio.plugins, "get_plugins", with_tf2)
    monkeypatch.setattr(bioio.bio_image, "get_plugins", with_tf2)
    src = le.open_source(copy)
    np.testing.assert_array_equal(src.values[0], ome[0])
    assert src.attrs["channel_names"] == OME_CHANNELS


def test_channel_names_go_into_ome_tiff_and_imagej_tiff(files, tmp_path):
    d, czi, _ = files
    src = le.open_source(d / "cells.czi")
    ome = tmp_path / "out.ome.tif"
    le.export(src, le.ExportSettings(format="tiff", tiff_flavor="ome", output=str(ome)))
    with tifffile.TiffFile(ome) as tif:
        xml = tif.ome_metadata
        assert xml is not None
        np.testing.assert_array_equal(tif.series[0].asarray(), czi["left"])  # CZYX
    for name in CHANNELS:
        assert f'Name="{name}"' in xml
    back = le.open_source(ome)
    assert back.attrs["channel_names"] == CHANNELS and back.attrs["pixel_size"] == CZI_SIZES
    imagej = tmp_path / "out.tif"
    le.export(src, le.ExportSettings(format="tiff", tiff_flavor="imagej", output=str(imagej)))
    with tifffile.TiffFile(imagej) as tif:
        assert tif.series[0].axes == "ZCYX"
        assert tif.imagej_metadata is not None
        assert tif.imagej_metadata["Labels"] == CHANNELS * 4  # each page: its channel's name
        np.testing.assert_array_equal(tif.series[0].asarray(), czi["left"].transpose(1, 0, 2, 3))


def test_a_cutout_of_channels_keeps_their_names_and_a_transpose_keeps_them_with_c(files, tmp_path):
    d, czi, _ = files
    src = le.open_source(d / "cells.czi")
    out = tmp_path / "cut.ome.zarr"
    le.export(src, le.ExportSettings(format="ome-zarr", roi={"c": (1, 3)}, output=str(out)))
    data, meta = level0(out)
    np.testing.assert_array_equal(data[0], czi["left"][1:3])
    assert labels(meta) == ["GFP", "mCherry"]
    one = tmp_path / "one.ome.zarr"
    le.export(src, le.ExportSettings(format="ome-zarr", roi={"c": (2, 3)}, output=str(one)))
    assert labels(level0(one)[1]) == ["mCherry"]
    assert level0(one)[1]["omero"]["channels"][0]["color"] == "FFFFFF"
    tif = tmp_path / "cut.ome.tif"
    settings = le.ExportSettings(
        format="tiff", tiff_flavor="ome", roi={"c": (0, 2)}, axis_order="zyxc", output=str(tif)
    )
    le.export(src, settings)
    back = le.open_source(tif)
    assert back.attrs["channel_names"] == ["DAPI", "GFP"]
    # the names stay with their channels' data, wherever the c axis went
    np.testing.assert_array_equal(back.transpose("c", "z", "y", "x").values, czi["left"][:2])
    ij = tmp_path / "cut.tif"
    settings = le.ExportSettings(
        format="tiff", tiff_flavor="imagej", roi={"c": (1, 3), "z": (0, 2)}, output=str(ij)
    )
    le.export(src, settings)
    with tifffile.TiffFile(ij) as f:
        assert f.imagej_metadata is not None
        assert f.imagej_metadata["Labels"] == ["GFP", "mCherry"] * 2


def test_sizes_keep_their_unit_and_no_channel_names_are_invented(tmp_path):
    path = tmp_path / "nm.ome.tif"
    write_ome_tiff(path, [np.ones((2, 2, 8, 8), np.uint16)], names=None, unit="nm")
    src = le.open_source(path, scene=0)
    assert src.attrs["unit"] == "nanometer"
    assert src.attrs["pixel_size"] == {"z": 1500.0, "y": 250.0, "x": 250.0}
    assert "channel_names" not in src.attrs  # bioio's made-up "Channel:0:0" is not a name
    out = tmp_path / "nm.ome.zarr"
    le.export(src, le.ExportSettings(format="ome-zarr", output=str(out)))
    data, meta = level0(out)
    assert "omero" not in meta
    assert scale(meta) == [1.0, 1.0, 1500.0, 250.0, 250.0]
    assert meta["multiscales"][0]["axes"][-1]["unit"] == "nanometer"
    plain = tmp_path / "plain.ome.zarr"
    le.export(
        np.zeros((2, 8, 8), np.uint8), le.ExportSettings(format="ome-zarr", output=str(plain))
    )
    assert "omero" not in json.dumps(level0(plain)[1])


def test_a_bioio_source_reads_any_region_after_pickling(files):
    d, czi, _ = files
    src = le.open_source(d / "cells.czi", scene="right")
    reader = pickle.loads(pickle.dumps(source_facts(src).reader))  # as a worker gets it
    region = (0, slice(1, 3), slice(1, 4), slice(5, 17), slice(3, 29))
    np.testing.assert_array_equal(reader[region], czi["right"][region[1:]])
    assert source_facts(src).native == (1, 1, 1, 20, 30)  # bioio's chunks: y/x planes


def test_a_plugin_that_does_not_choose_chunks_is_read_in_its_own(files, monkeypatch):
    import bioio

    d, czi, _ = files
    real = bioio.BioImage
    asked: list[bool] = []

    def no_chunk_dims(image, reader=None, **kwargs):  # a plugin without chunk_dims
        asked.append("chunk_dims" in kwargs)
        if "chunk_dims" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'chunk_dims'")
        return real(image, reader=reader, **kwargs)

    monkeypatch.setattr(bioio, "BioImage", no_chunk_dims)
    src = le.open_source(d / "cells.czi")
    assert source_facts(src).native == (1, 1, 4, 20, 30)  # bioio's default: z-stacks
    reader = pickle.loads(pickle.dumps(source_facts(src).reader))
    np.testing.assert_array_equal(reader[0, 1:2, 2:4, :5, :6], czi["left"][1:2, 2:4, :5, :6])
    assert asked == [True, False, False]  # the copy does not ask again


def test_project_files_and_saved_settings_keep_the_scene(files, tmp_path):
    d, czi, _ = files
    project = le.Batch(
        le.ExportSettings(format="npy", output=str(tmp_path / "{nickname}.npy")),
        [le.batch.Dataset(str(d / "cells.czi"), "r", scene="right"),
         le.batch.Dataset(str(d / "cells.czi"), "l")],
    )  # fmt: skip
    loaded = le.Batch.load(project.save(tmp_path / "p.toml"))
    assert [ds.scene for ds in loaded.datasets] == ["right", None]
    assert loaded.export_all().ok
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy")[0], czi["right"])
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy")[0], czi["left"])
    assert cli.main(["export", str(d / "cells.czi"), "--scene", "1", "--format", "npy",
                     "--save-settings", str(tmp_path / "s.toml")]) == 0  # fmt: skip
    assert le.Batch.load(tmp_path / "s.toml").datasets[0].scene == "1"
    assert cli.main(["preview", str(d / "cells.czi"), "--scene", "right", "--axis-order", "zyx",
                     "--roi", "c=1:2", "--png", str(tmp_path / "p.png")]) == 0  # fmt: skip
    assert (tmp_path / "p.png").stat().st_size > 0
