"""Preview layers (docs/preview.md): raw, live and from-disk planes, in Python and as a PNG."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from PIL import Image

import lazyexport
from lazyexport import ExportError, ExportSettings, demo, export, preview
from lazyexport.cli import main
from lazyexport.errors import AxisError, NotExportedError, RoiError, SourceError
from lazyexport.plan import build_plan
from lazyexport.preview import PAD_PX, PANEL_PX, TITLE_PX, picture_size


def _source(shape=(20, 30, 40), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, size=shape, dtype=np.uint16)


def _renormalized_uint8(raw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The export of a uint16 plane with renormalize [lo, hi] -> [0, 255] and dtype uint8, by
    hand."""
    y = raw.astype(np.float32)
    y -= np.float32(lo)
    y *= np.float32(255)
    y /= np.float32(hi - lo)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


SETTINGS = ExportSettings(
    roi={"z": (5, 15), "y": (2, 28)},
    renormalize=((100, 60000), (0, 255)),
    dtype="uint8",
    axis_order="xyz",
)


class BlockRecorder:
    """A lazily generated dask source whose computed blocks are recorded (their array-location)."""

    def __init__(self):
        self.blocks: list[tuple[tuple[int, int], ...]] = []
        self.lock = threading.Lock()

    def __call__(self, block_info=None):
        info = block_info[None]
        with self.lock:
            self.blocks.append(tuple(tuple(loc) for loc in info["array-location"]))
        grids = np.meshgrid(*[np.arange(a, b) for a, b in info["array-location"]], indexing="ij")
        return sum(g * 10 ** (2 * i) for i, g in enumerate(reversed(grids))).astype(np.float64)

    def array(self, shape, chunks) -> da.Array:
        return da.map_blocks(
            self,
            dtype=np.float64,
            chunks=da.core.normalize_chunks(chunks, shape),
            meta=np.empty((0,) * len(shape)),
        )


def test_preview_is_public_api():
    assert "preview" in lazyexport.__all__
    assert lazyexport.preview is preview


def test_raw_and_live_planes_equal_numpy_with_renormalize_dtype_and_transpose():
    src = _source()
    planes = preview(
        xr.DataArray(src, dims=("z", "y", "x")), SETTINGS, at={"z": 7}, layers=("raw", "live")
    )
    raw, live = planes["raw"], planes["live"]
    # axis order xyz: the plane is the last two free output axes, x then y, cut to the ROI
    expected_raw = src[7, 2:28, :].T
    assert raw.dims == ("x", "y") and live.dims == ("x", "y")
    np.testing.assert_array_equal(raw.values, expected_raw)
    assert raw.dtype == np.uint16
    assert live.dtype == np.uint8
    np.testing.assert_array_equal(live.values, _renormalized_uint8(expected_raw, 100, 60000))
    # labeled in source coordinates
    np.testing.assert_array_equal(live.coords["y"].values, np.arange(2, 28))
    np.testing.assert_array_equal(live.coords["x"].values, np.arange(0, 40))
    assert int(live.coords["z"]) == 7 and int(raw.coords["z"]) == 7


def test_live_plane_equals_the_plans_full_result():
    src = _source(seed=3)
    planes = preview(
        xr.DataArray(src, dims=("z", "y", "x")), SETTINGS, at={"z": 14}, layers=("live",)
    )
    plan = build_plan(xr.DataArray(src, dims=("z", "y", "x")), SETTINGS)
    full = plan.result.values  # xyz, z counted from the ROI start 5
    np.testing.assert_array_equal(planes["live"].values, full[:, :, 14 - 5])


def test_other_plane_and_default_position_in_the_middle_of_the_roi():
    src = np.random.default_rng(1).random((12, 16, 20, 3)).astype(np.float32)
    settings = ExportSettings(roi={"z": (2, 10), "x": (4, 20)}, axis_order="czyx")
    # fixing y leaves z and x free: a zx plane, channel kept whole as the last axis
    planes = preview(
        xr.DataArray(src, dims=("z", "y", "x", "c")), settings, at={"y": 5}, layers=("raw", "live")
    )
    assert planes["live"].dims == ("z", "x", "c")
    np.testing.assert_array_equal(planes["live"].values, src[2:10, 5, 4:20, :])
    np.testing.assert_array_equal(planes["raw"].values, src[2:10, 5, 4:20, :])
    # nothing given: a yx plane in the middle of the ROI along z (2 + 8 // 2 = 6)
    planes = preview(xr.DataArray(src, dims=("z", "y", "x", "c")), settings, layers=("live",))
    assert planes["live"].dims == ("y", "x", "c")
    assert int(planes["live"].coords["z"]) == 6
    np.testing.assert_array_equal(planes["live"].values, src[6, :, 4:20, :])


@pytest.mark.parametrize(
    "fmt,output",
    [
        ("hdf5", "out.h5/exported_data"),
        ("zarr", "out.zarr"),
        ("tiff-sequence", "slices/z{slice_index}.tif"),
    ],
)
def test_disk_plane_equals_numpy_for_each_readable_format(tmp_path, fmt, output):
    src = _source(seed=2)
    source = xr.DataArray(src, dims=("z", "y", "x"))
    settings = SETTINGS.replace(format=fmt, output=str(tmp_path / output), axis_order="zyx")
    result = export(source, settings)
    if fmt == "tiff-sequence":
        # the disk layer reads only the slice file of its plane: the others may go
        keep = tmp_path / "slices" / "z09.tif"
        assert keep in result.paths
        for path in result.paths:
            if path != keep:
                path.unlink()
    planes = preview(source, settings, at={"z": 9})
    expected = _renormalized_uint8(src[9, 2:28, :], 100, 60000)
    assert planes["disk"].dims == ("y", "x")
    np.testing.assert_array_equal(planes["disk"].values, expected)
    np.testing.assert_array_equal(planes["live"].values, expected)
    np.testing.assert_array_equal(planes["raw"].values, src[9, 2:28, :])


def test_disk_plane_of_a_sequence_across_slices(tmp_path):
    src = _source(seed=4)
    source = xr.DataArray(src, dims=("z", "y", "x"))
    settings = SETTINGS.replace(
        format="tiff-sequence", output=str(tmp_path / "s{slice_index}.tif"), axis_order="zyx"
    )
    export(source, settings)
    planes = preview(
        source, settings, at={"y": 20}, layers=("disk",)
    )  # a zx plane: one row of every slice
    assert planes["disk"].dims == ("z", "x")
    np.testing.assert_array_equal(
        planes["disk"].values, _renormalized_uint8(src[5:15, 20, :], 100, 60000)
    )


def test_disk_layer_raises_when_nothing_was_exported(tmp_path):
    settings = SETTINGS.replace(format="zarr", output=str(tmp_path / "never.zarr"))
    with pytest.raises(
        NotExportedError, match=r"nothing exported yet at .*never\.zarr; run export first"
    ):
        preview(_source(), settings, at={"z": 7})
    hdf5 = SETTINGS.replace(format="hdf5", output=str(tmp_path / "never.h5"))
    with pytest.raises(ExportError, match=r"nothing exported yet at .*never\.h5/exported_data"):
        preview(_source(), hdf5, at={"z": 7}, layers=("disk",))


def test_disk_layer_refuses_an_export_made_with_other_settings(tmp_path):
    settings = SETTINGS.replace(format="zarr", output=str(tmp_path / "o.zarr"))
    export(_source(), settings)
    with pytest.raises(SourceError, match="does not match these settings"):
        preview(_source(), settings.replace(roi={"z": (5, 16)}), at={"z": 7}, layers=("disk",))


@pytest.mark.parametrize(
    "at,error,message",
    [
        ({"q": 3}, AxisError, r"axis 'q', which the source does not have \(its axes are 'zyx'\)"),
        ({"z": 15}, RoiError, r"z=15 is outside the ROI: axis 'z' has the valid range \[5, 15\)"),
        ({"y": 1}, RoiError, r"y=1 is outside the ROI: axis 'y' has the valid range \[2, 28\)"),
        ({"z": 6, "y": 3}, AxisError, "needs two axes the position leaves free"),
    ],
)
def test_bad_positions_are_clear_errors(at, error, message):
    with pytest.raises(error, match=message):
        preview(_source(), SETTINGS, at=at, layers=("raw", "live"))


def test_raw_only_may_look_outside_the_roi():
    src = _source()
    planes = preview(src, SETTINGS.replace(axis_order=None), at={"z": 0}, layers=("raw",))
    np.testing.assert_array_equal(planes["raw"].values, src[0, 2:28, :])


def test_live_preview_computes_only_the_chunks_of_its_plane():
    recorder = BlockRecorder()
    source = xr.DataArray(recorder.array((64, 64, 64), (8, 32, 32)), dims=("z", "y", "x"))
    planes = preview(
        source, ExportSettings(dtype="float32", axis_order="xyz"), at={"z": 13}, layers=("live",)
    )
    # the plane z=13 lies in the chunk row z in [8, 16): 2 x 2 chunks in y and x, each once
    assert sorted(recorder.blocks) == sorted(
        {((8, 16), (y, y + 32), (x, x + 32)) for y in (0, 32) for x in (0, 32)}
    )
    z, y, x = 13, np.arange(64)[None, :], np.arange(64)[:, None]
    np.testing.assert_array_equal(
        planes["live"].values, (z * 10**4 + y * 100 + x).astype(np.float32)
    )


def test_live_preview_of_a_16_gib_volume_computes_one_plane_of_chunks(monkeypatch):
    computed: list = []
    lock = threading.Lock()
    original = demo._probability_block

    def recording_block(block_info=None, out_dtype="float32"):
        with lock:
            computed.append(tuple(tuple(loc) for loc in block_info[None]["array-location"]))
        return original(block_info=block_info, out_dtype=out_dtype)

    monkeypatch.setattr(demo, "_probability_block", recording_block)
    volume = demo.sample_volume(shape=(512, 2048, 2048))
    assert volume.nbytes == 16 * 2**30  # zyxc float32, two channels: never materialised
    settings = ExportSettings(
        roi={"z": (100, 400)}, renormalize=((0, 1), (0, 255)), dtype="uint8", axis_order="czyx"
    )
    live = preview(volume, settings, at={"z": 300}, layers=("live",))["live"]
    # chunks are (32, 256, 256, 2): the plane needs the 8 x 8 chunks of z in [288, 320), nothing
    # else
    assert len(computed) == 64 and len(set(computed)) == 64
    assert {loc[0] for loc in computed} == {(288, 320)}
    assert live.dims == ("y", "x", "c") and live.shape == (2048, 2048, 2)
    reference = original(
        block_info={None: {"array-location": [(300, 301), (0, 2048), (0, 2048), (0, 2)]}}
    )[0]
    expected = np.clip(np.rint(reference * np.float32(255)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(live.values, expected)


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def sample_h5(tmp_path) -> Path:
    export(
        demo.sample_volume(shape=(24, 64, 96), chunks=(8, 32, 32)),
        ExportSettings(output=str(tmp_path / "sample.h5")),
    )
    return tmp_path / "sample.h5"


def _options(tmp_path) -> list[str]:
    return [
        "--roi",
        "z=4:20",
        "--renormalize",
        "0,1:0,255",
        "--dtype",
        "uint8",
        "--axis-order",
        "czyx",
        "--format",
        "zarr",
        "--output",
        str(tmp_path / "exported.zarr"),
    ]


def _panels(png: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The image area and the title band of each of the three panels, as RGB arrays."""
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    inner = 2 * PAD_PX
    areas = [
        image[TITLE_PX + inner : -inner, i * PANEL_PX + inner : (i + 1) * PANEL_PX - inner]
        for i in range(3)
    ]
    titles = [image[: TITLE_PX - PAD_PX, i * PANEL_PX : (i + 1) * PANEL_PX] for i in range(3)]
    return areas, titles


def test_cli_preview_png_has_three_panels(tmp_path, sample_h5, capsys):
    png = tmp_path / "pictures" / "preview.png"
    args = ["preview", str(sample_h5), *_options(tmp_path), "--at", "z=10", "--png", str(png)]

    # before the export: the disk panel says so, the command still succeeds
    assert main(args) == 0
    assert "nothing exported yet" in capsys.readouterr().err
    assert (
        Image.open(png).size
        == picture_size((64, 96))
        == (3 * PANEL_PX, round(PANEL_PX * 64 / 96) + TITLE_PX)
    )
    (raw, live, disk), titles = _panels(png)
    assert raw.std() > 20 and live.std() > 20  # pictures, not blank
    assert disk.std() < 15  # a plain panel with one line of text
    assert np.abs(disk.mean() - live.mean()) > 10
    assert all((t < 100).any() for t in titles)  # every panel has a dark title text

    assert main(["export", str(sample_h5), *_options(tmp_path), "-q"]) == 0
    assert main(args) == 0
    (raw, live, disk), _ = _panels(png)
    assert disk.std() > 20
    np.testing.assert_array_equal(disk, live)  # the same plane, read back from disk
    assert (live[..., 0] != live[..., 1]).any()  # two channels: a magenta/green composite

    # one display range for all: the raw probabilities (0..1) turn black next to 0..255
    assert main([*args, "--same-range"]) == 0
    (raw, live, disk), _ = _panels(png)
    assert raw.mean() < 5 < live.mean() - 50
    # one channel: gray
    assert main([*args, "--channel", "1"]) == 0
    (raw, live, disk), _ = _panels(png)
    assert (
        (live[..., 0] == live[..., 1]).all()
        and (live[..., 1] == live[..., 2]).all()
        and live.std() > 20
    )


@pytest.mark.parametrize(
    "at,message",
    [
        ("q=3", "axis 'q', which the source does not have"),
        ("z=2", r"z=2 is outside the ROI: axis 'z' has the valid range \[4, 20\)"),
        ("z=ten", "cannot read --at part 'z=ten'"),
    ],
)
def test_cli_preview_bad_position_exits_2_with_one_error_line(
    tmp_path, sample_h5, capsys, at, message
):
    png = tmp_path / "p.png"
    assert (
        main(["preview", str(sample_h5), *_options(tmp_path), "--at", at, "--png", str(png)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert re.search(message, err[0])
    assert not png.exists()


@pytest.mark.parametrize(
    "fmt,output,opened",
    [
        ("hdf5", "out.h5/exported_data", "out.h5/exported_data"),
        ("zarr", "out.zarr", "out.zarr"),
        ("tiff-sequence", "slices/z{slice_index}.tif", "slices/z*.tif"),
    ],
)
def test_info_describes_an_export_like_a_source(tmp_path, sample_h5, capsys, fmt, output, opened):
    assert (
        main(
            [
                "export",
                str(sample_h5),
                "--roi",
                "z=4:7",
                "--axis-order",
                "czyx",
                "--dtype",
                "uint16",
                "--renormalize",
                "0,1:0,1000",
                "--format",
                fmt,
                "--output",
                str(tmp_path / output),
                "-q",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(tmp_path / opened)]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["axes"] == "czyx"
    assert lines["shape"] == "(c=2, z=3, y=64, x=96)"
    assert lines["dtype"] == "uint16"
