"""OME-Zarr places its levels where the source's pixels are (issue #26 item 17): a cutout's
``translation`` is its start in the source times the scale, and a level made from windows
(``mean``, ``mode``) lies at the windows' centres, half a window minus half a pixel further;
``nearest`` keeps each window's first pixel. Masks (bool) take the mode by default (item 18).
Validated by ome-zarr-models for NGFF 0.4 and 0.5."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers.zarr_nodes import read_all
from lazyexport.formats.pyramid import downsample

PIXEL = {"z": 2.0, "y": 0.5, "x": 0.25}


def multiscale(path, zarr_format: int):
    """The image's multiscale, as ome-zarr-models validates it."""
    group = zarr.open_group(str(path), mode="r")
    if zarr_format == 3:
        from ome_zarr_models.v05.image import Image

        model = Image.from_zarr(group)
        attrs = model.ome_attributes if hasattr(model, "ome_attributes") else model.attributes.ome
        return attrs.multiscales[0]
    from ome_zarr_models.v04.image import Image as Image04

    return Image04.from_zarr(group).attributes.multiscales[0]


def transforms(ms) -> list[tuple[list[float], list[float] | None]]:
    """(scale, translation or None) of each level."""
    out = []
    for d in ms.datasets:
        kinds = [t.type for t in d.coordinateTransformations]
        assert kinds in (["scale"], ["scale", "translation"])  # NGFF's order
        translation = d.coordinateTransformations[1].translation if len(kinds) == 2 else None
        out.append((list(d.coordinateTransformations[0].scale), translation))
    return out


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize("method", ["mean", "mode", "nearest"])
def test_a_cutout_and_its_levels_lie_over_the_source(tmp_path, zarr_format, method):
    """Before: every level had only a ``scale``, so a cutout lay at the origin, and a mean level
    half a pixel off."""
    data = np.arange(8 * 40 * 48, dtype="uint16").reshape(8, 40, 48)
    roi = {"z": (2, 6), "y": (10, 34), "x": (5, 45)}
    out = tmp_path / "cut.ome.zarr"
    le.export(
        le.open_source(data, axes="zyx"),
        le.ExportSettings(
            format="ome-zarr", zarr_format=zarr_format, roi=roi, pixel_size=PIXEL,
            unit="micrometer", levels=3, downsample=method, output=str(out),
        ),
    )  # fmt: skip
    levels = transforms(multiscale(out, zarr_format))
    start = [roi[a][0] * PIXEL[a] for a in "zyx"]
    assert levels[0] == ([2.0, 0.5, 0.25], start)
    # z is 4x coarser than y/x: never halved; y and x halved at each level
    half = 0.0 if method == "nearest" else 1.0
    assert levels[1] == (
        [2.0, 1.0, 0.5],
        [start[0], start[1] + half * 0.25, start[2] + 0.125 * half],
    )
    assert levels[2] == (
        [2.0, 2.0, 1.0],
        [start[0], start[1] + half * 0.75, start[2] + 0.375 * half],
    )
    # a level's pixel lies where the source pixels it was made from lie (their centre)
    group = zarr.open_group(str(out), mode="r")
    level1 = np.asarray(read_all(group["1"]))
    (scale0, _), (scale1, shift1) = levels[0], levels[1]
    for j in [(0, 0, 0), (3, 5, 7), (1, 11, 19)]:
        where = np.array(shift1) + np.array(j) * np.array(scale1)  # physical
        window = [
            slice(roi[a][0] + j[i] * f, roi[a][0] + (j[i] + 1) * f)
            for i, (a, f) in enumerate(zip("zyx", (1, 2, 2)))
        ]
        pixels = np.argwhere(np.ones(data[tuple(window)].shape, bool)) + [w.start for w in window]
        if method == "nearest":
            assert level1[j] == data[tuple(w.start for w in window)]
            np.testing.assert_allclose(where, pixels[0] * np.array(scale0))
        else:
            np.testing.assert_allclose(where, pixels.mean(axis=0) * np.array(scale0))


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_whole_source_has_only_its_scale_and_channels_never_move(tmp_path, zarr_format):
    data = np.zeros((3, 4, 64, 64), "uint8")
    whole = tmp_path / "whole.ome.zarr"
    le.export(
        le.open_source(data, axes="czyx"),
        le.ExportSettings(format="ome-zarr", zarr_format=zarr_format, levels=2,
                          downsample="nearest", output=str(whole)),
    )  # fmt: skip
    assert [t for _, t in transforms(multiscale(whole, zarr_format))] == [None, None]
    cut = tmp_path / "cut.ome.zarr"
    le.export(
        le.open_source(data, axes="czyx"),
        le.ExportSettings(format="ome-zarr", zarr_format=zarr_format, levels=1,
                          roi={"c": (1, 3), "y": (8, 40)}, output=str(cut)),
    )  # fmt: skip
    assert transforms(multiscale(cut, zarr_format)) == [
        ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 8.0, 0.0])
    ]


def test_ome_zarr_reads_the_translation(tmp_path):
    """ome-zarr-py (what napari's plugin uses) sees the transforms as written."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = tmp_path / "cut.ome.zarr"
    le.export(
        le.open_source(np.ones((4, 64, 64), "float32"), axes="zyx"),
        le.ExportSettings(format="ome-zarr", roi={"y": (16, 64)}, levels=2, output=str(out)),
    )
    (node, *_) = list(Reader(parse_url(str(out)))())
    written = node.metadata["coordinateTransformations"]
    assert written[0] == [
        {"type": "scale", "scale": [1.0, 1.0, 1.0]},
        {"type": "translation", "translation": [0.0, 16.0, 0.0]},
    ]
    assert written[1][1] == {"type": "translation", "translation": [0.5, 16.5, 0.5]}


def test_a_mask_keeps_its_size_at_coarser_levels(tmp_path):
    """Before: a bool mask's levels took the mean, which a bool output turns into "any": a
    window with one True pixel was True, so masks grew level by level."""
    rng = np.random.default_rng(1)
    mask = rng.random((2, 256, 256)) < 0.2
    out = tmp_path / "mask.ome.zarr"
    result = le.export(
        le.open_source(mask, axes="zyx"),
        le.ExportSettings(format="ome-zarr", levels=3, output=str(out)),
    )
    assert not any("average" in note for note in result.notes)
    group = zarr.open_group(str(out), mode="r")
    below = mask
    for level in ("1", "2"):
        got = np.asarray(read_all(group[level]))
        factors = (1 if below.shape[0] == got.shape[0] else 2, 2, 2)
        np.testing.assert_array_equal(got, downsample(below, factors, "mode"))
        below = got
    # no level holds more of the mask than the source (the mean, "any", held most of it)
    assert np.asarray(read_all(group["2"])).mean() <= mask.mean()
    # and mean is still there for whoever asks for it
    le.export(
        le.open_source(mask, axes="zyx"),
        le.ExportSettings(format="ome-zarr", levels=2, downsample="mean",
                          output=str(tmp_path / "any.ome.zarr")),
    )  # fmt: skip
    anyof = np.asarray(read_all(zarr.open_group(str(tmp_path / "any.ome.zarr"), mode="r")["1"]))
    assert anyof.mean() > 0.5
