"""Review findings of the new steps (issue 28): labels binned after a label step, OME-Zarr
scales of binned exports without pixel sizes, the mean of bool masks, label steps along an axis
an earlier step rescaled, and the messages of binning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers import run_cli
from lazyexport.errors import SettingsError


def _probabilities(labels: np.ndarray, classes: int) -> np.ndarray:
    """A ``zyxc`` probability map whose argmax (0-based) along ``c`` is ``labels`` (``zyx``)."""
    return np.stack([labels == c for c in range(classes)], axis=-1).astype(np.float32)


def test_segment_then_mode_bin_stays_a_label_image(tmp_path):
    # labels 1, 3, 1, 3, ... after the bin along x: a mean pyramid would invent 2
    lab = np.broadcast_to(np.where(np.arange(1040) % 4 < 2, 0, 2), (1, 4, 1040))
    out = tmp_path / "s.ome.zarr"
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(out),
        segment="argmax:c",
        bin={"x": 2},
        bin_method="mode",
        step_order=["segment", "bin"],
    )
    le.export(le.open_source(_probabilities(lab, 3), axes="zyxc"), settings)
    assert set(np.unique(zarr.open_array(str(out / "0"))[...])) == {1, 3}
    assert set(np.unique(zarr.open_array(str(out / "1"))[...])) <= {1, 3}
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]
    assert "image-label" in attrs


@pytest.mark.parametrize("method", ["nearest", "max", "min", None])
def test_threshold_then_bin_keeps_the_labels(tmp_path, method):
    p = np.random.default_rng(1).random((1, 6, 600, 2), dtype=np.float32)
    out = tmp_path / "t.ome.zarr"
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(out),
        threshold="c=1:>0.5",
        bin={"x": 3},
        bin_method=method,
        step_order=["threshold", "bin"],
    )
    le.export(le.open_source(p, axes="zyxc"), settings)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]
    assert "image-label" in attrs
    mask = (p[..., 1] > 0.5).astype(np.uint8)
    got = zarr.open_array(str(out / "0"))[...]
    if method is None:  # the default after a label step: the mode (ties: the smaller)
        windows = mask.reshape(1, 6, 200, 3)
        assert np.array_equal(got, (windows.sum(-1) >= 2).astype(np.uint8))


def test_mean_bin_after_segment_is_refused(tmp_path):
    settings = le.ExportSettings(
        format="zarr",
        output=str(tmp_path / "o.zarr"),
        segment="argmax:c",
        bin={"x": 2},
        bin_method="mean",
        step_order=["segment", "bin"],
    )
    with pytest.raises(SettingsError, match="mean after segment would average labels"):
        le.export(le.open_source(np.zeros((2, 4, 4, 3), np.float32), axes="zyxc"), settings)
    assert not (tmp_path / "o.zarr").exists()


def _transforms(store) -> list[dict]:
    ms = json.loads((store / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    return [
        {t["type"]: t[t["type"]] for t in d["coordinateTransformations"]} for d in ms["datasets"]
    ]


def test_binned_ome_zarr_without_pixel_sizes_is_in_source_pixels(tmp_path):
    out = tmp_path / "b.ome.zarr"
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(out),
        roi={"y": (3, 40), "x": (10, 60)},
        bin={"y": 2, "x": 3},
        levels=2,
    )
    le.export(le.open_source(np.zeros((4, 40, 60), np.uint16), axes="zyx"), settings)
    level0, level1 = _transforms(out)
    # one binned pixel spans 2 x 3 source pixels, its centre at the window's centre
    assert level0 == {"scale": [1.0, 2.0, 3.0], "translation": [0.0, 3.5, 11.0]}
    # level 1 halves z, y and x (z: 1 source pixel, not coarser than y/x), each at its centre
    assert level1["scale"] == [2.0, 4.0, 6.0]
    assert level1["translation"] == [0.5, 4.5, 12.5]


def test_unbinned_ome_zarr_without_pixel_sizes_keeps_scale_one(tmp_path):
    out = tmp_path / "u.ome.zarr"
    settings = le.ExportSettings(
        format="ome-zarr", output=str(out), roi={"y": (3, 40), "x": (10, 60)}, levels=1
    )
    le.export(le.open_source(np.zeros((4, 40, 60), np.uint16), axes="zyx"), settings)
    assert _transforms(out) == [{"scale": [1.0, 1.0, 1.0], "translation": [0.0, 3.0, 10.0]}]


def test_bool_mean_bin_is_the_majority(tmp_path):
    mask = np.zeros((1, 4, 5), bool)
    mask[0, 0, 0] = True  # 1 of 4: False
    mask[0, 0:2, 2:4] = [[True, True], [True, False]]  # 3 of 4: True
    mask[0, 2:4, 0:2] = [[True, False], [False, True]]  # 2 of 4 (a tie): False
    mask[0, 2:4, 4] = True  # the short last window along x: 2 of 2: True
    out = tmp_path / "o.zarr"
    le.export(
        le.open_source(mask, axes="zyx"),
        le.ExportSettings(format="zarr", output=str(out), bin={"y": 2, "x": 2}),
    )
    got = np.asarray(zarr.open_array(str(out))[...])
    assert got.dtype == bool
    assert got.tolist() == [[[False, True, False], [False, False, True]]], got


@pytest.mark.parametrize("step", [{"threshold": "c=1:>0.5"}, {"segment": "argmax:c"}])
def test_label_step_after_a_bin_along_its_axis_is_refused(tmp_path, step):
    p = np.random.default_rng(0).random((2, 10, 12, 4), dtype=np.float32)
    out = tmp_path / "o.zarr"
    settings = le.ExportSettings(format="zarr", output=str(out), bin={"c": 2}, **step)
    with pytest.raises(SettingsError, match="an earlier step made each pixel along 'c' span 2"):
        le.export(le.open_source(p, axes="zyxc"), settings)
    assert not out.exists()


def test_threshold_before_a_bin_along_another_axis(tmp_path):
    p = np.random.default_rng(0).random((2, 10, 12, 4), dtype=np.float32)
    out = tmp_path / "o.zarr"
    settings = le.ExportSettings(
        format="zarr", output=str(out), bin={"x": 2}, bin_method="max", threshold="c=1:>0.5"
    )
    le.export(le.open_source(p, axes="zyxc"), settings)
    expected = (p[..., 1] > 0.5).reshape(2, 10, 6, 2).max(-1)
    assert np.array_equal(zarr.open_array(str(out))[...], expected)


def test_bin_after_segment_names_the_data_after_it(tmp_path):
    settings = le.ExportSettings(
        format="zarr",
        output=str(tmp_path / "o.zarr"),
        segment="argmax:c",
        bin={"c": 2},
        step_order=["segment", "bin"],
    )
    with pytest.raises(SettingsError) as exc:
        le.export(le.open_source(np.zeros((2, 8, 8, 3), np.float32), axes="zyxc"), settings)
    assert "which the data after segment (axes 'zyx') does not have" in str(exc.value)


@pytest.mark.parametrize("given", ["y=2,y=3", "y=2,Y=3:max", {"y": 2, "Y": 3}])
def test_bin_axis_given_twice_is_refused(given):
    with pytest.raises(SettingsError, match="bin gives axis 'y' twice"):
        le.ExportSettings(bin=given)


def test_bin_axis_given_twice_on_the_command_line_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 8, 8), np.uint8))
    out = tmp_path / "o.zarr"
    done = run_cli("export", tmp_path / "a.npy", "--bin", "y=2,y=3", "--output", out)
    assert done.returncode == 2, done.stderr
    assert "bin gives axis 'y' twice" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
