"""The segment and threshold steps (lazyexport.step_segment): a probability map becomes a label
image. Values against numpy (np.argmax + 1, 0 where every channel is NaN; the numpy comparison),
the settings' checks and refusals, the label image OME-Zarr gets (mode pyramids, image-label
metadata read by ome-zarr-py), and every way to run an export: the API, the command line, project
files, --plan, preview, regions, compute=False and worker processes."""

from __future__ import annotations

import re
import shlex
from typing import Any

import dask
import h5py
import numpy as np
import pytest
import xarray as xr
import zarr

import lazyexport as le
from helpers import ROOT, run_cli, write_hdf5, write_zarr3
from helpers.labels import COMPARISONS as OPS
from helpers.labels import expected_argmax
from helpers.zarr_nodes import as_array, read_all, zarr_attrs
from lazyexport.errors import ExportError, SettingsError
from lazyexport.plan import build_plan
from lazyexport.resume import plan_token
from lazyexport.step_segment import Segment, Threshold, argmax_labels, label_names
from lazyexport.steps import Pipeline


def probabilities(shape=(6, 20, 24, 3), seed=0, nan=0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.random(shape, dtype=np.float32)
    if nan:
        data[rng.random(shape) < nan] = np.nan
        data[0, 0, :4, :] = np.nan  # pixels whose channels are all NaN
    return data


# ------------------------------------------------------------------------------------------
# values


def test_argmax_labels_are_numpy_s_argmax_plus_one():
    data = probabilities()
    got = argmax_labels(data, 3, np.dtype("uint8"))
    np.testing.assert_array_equal(got, np.argmax(data, axis=3) + 1)
    assert got.dtype == np.uint8


def test_nan_channels_are_left_out_and_all_nan_is_zero():
    block = np.array(
        [
            [np.nan, np.nan, np.nan],  # all NaN: 0
            [np.nan, 0.2, 0.1],  # a NaN does not win
            [0.3, np.nan, 0.3],  # ties: the first
            [np.nan, -np.inf, np.nan],  # -inf is a value, NaN is not
            [-np.inf, -np.inf, 0.0],
        ],
        dtype=np.float32,
    )
    got = argmax_labels(block, 1, np.dtype("uint8"))
    np.testing.assert_array_equal(got, [0, 2, 1, 2, 3])
    np.testing.assert_array_equal(got, expected_argmax(block, 1))


def test_integer_probabilities_and_ties_take_the_first_channel():
    data = np.random.default_rng(1).integers(0, 4, size=(5, 7, 4), dtype=np.uint8)
    np.testing.assert_array_equal(
        argmax_labels(data, 0, np.dtype("uint8")), np.argmax(data, axis=0) + 1
    )


@pytest.mark.parametrize("op", list(OPS))
def test_threshold_is_numpy_s_comparison_and_nan_is_zero(op):
    data = probabilities(nan=0.1)
    step = Threshold("zyxc", "c", 1, op, 0.5, "c=1")
    got = step.apply(data[..., 1:2], (slice(0, 6), slice(0, 20), slice(0, 24)), data.shape)
    np.testing.assert_array_equal(got, OPS[op](data[..., 1], 0.5))
    assert got.dtype == np.uint8 and not got[np.isnan(data[..., 1])].any()


def test_the_step_drops_its_axis_and_reads_all_of_it_or_one_channel():
    seg = Segment("zcyx", "c", ["a", "b", "c"])
    pipe = Pipeline((4, 3, 10, 12), np.dtype("float32"), "zcyx", [seg])
    assert pipe.axes == ("z", "y", "x") and pipe.shape == (4, 10, 12)
    assert pipe.dtype == np.uint8
    region = (slice(1, 3), slice(2, 5), slice(0, 6))
    assert pipe.source_region(region) == (slice(1, 3), slice(0, 3), slice(2, 5), slice(0, 6))
    thr = Threshold("zcyx", "c", 2, ">", 0.5, "c=2 > 0.5")
    assert thr.source_region(region, (4, 3, 10, 12))[1] == slice(2, 3)
    # the lazy path gives the block path's labels
    data = probabilities((4, 3, 10, 12), nan=0.2)
    arr = xr.DataArray(dask.array.from_array(data, chunks=(2, 1, 5, 5)), dims=list("zcyx"))
    for step in (seg, thr):
        lazy = step.lazy(arr)
        assert lazy.dims == ("z", "y", "x")
        whole = tuple(slice(0, n) for n in (4, 10, 12))
        block = data[step.source_region(whole, data.shape)]
        np.testing.assert_array_equal(lazy.values, step.apply(block, whole, data.shape))


def zyxc(data: np.ndarray) -> xr.DataArray:
    return xr.DataArray(data, dims=list("zyxc"))


def test_more_than_255_labels_are_uint16(tmp_path):
    data = probabilities((2, 3, 4, 300), seed=2)
    out = tmp_path / "o.npy"
    le.export(zyxc(data), le.ExportSettings(segment="argmax:c", format="npy", output=str(out)))
    got = np.load(out)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, np.argmax(data, axis=3) + 1)
    assert build_plan(zyxc(data[..., :255]), le.ExportSettings(segment="argmax:c")).dtype == "u1"


def test_label_names_follow_the_steps():
    seg = Segment("zyxc", "c", ["bg", "fg"])
    assert label_names([seg]) == ("bg", "fg")
    assert label_names([]) is None


# ------------------------------------------------------------------------------------------
# settings


def test_the_settings_are_normalized_and_serialize():
    s = le.ExportSettings(segment=" ArgMax:C ")
    assert s.segment == "argmax:c"
    assert le.ExportSettings(segment="argmax").segment == "argmax:c"
    t = le.ExportSettings(threshold="c = 1 : >= .5")
    assert t.threshold == "c=1:>=0.5"
    assert le.ExportSettings.from_dict(t.to_dict()) == t
    assert t.to_dict()["threshold"] == "c=1:>=0.5"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"segment": "max:c"}, "segment must be 'argmax:AXIS'"),
        ({"segment": "argmax:cz"}, "segment names one axis"),
        ({"threshold": "c=1>0.5"}, "threshold must be AXIS=INDEX:OP NUMBER"),
        ({"threshold": "c=1:=0.5"}, "threshold must be AXIS=INDEX:OP NUMBER"),
        ({"threshold": "c=1:>nan"}, "threshold must be AXIS=INDEX:OP NUMBER"),
        ({"segment": "argmax:c", "threshold": "c=0:>0.5"}, "give segment or threshold, not both"),
        (
            {"segment": "argmax:c", "renormalize": ((0, 1), (0, 255))},
            "segment argmax:c makes labels, and renormalize would change them",
        ),
        (
            {"threshold": "c=0:>0.5", "dtype": "float32"},
            "threshold c=0:>0.5 makes whole-number labels: give an integer dtype",
        ),
    ],
)
def test_settings_that_make_no_sense_are_refused_in_one_line(fields, says):
    with pytest.raises(SettingsError, match=re.escape(says)) as info:
        le.ExportSettings(**fields)
    assert "\n" not in str(info.value)


def test_plan_time_refusals(tmp_path):
    data = probabilities((4, 8, 8, 3))
    src = xr.DataArray(data, dims=list("zyxc"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"segment": "argmax:t"}, "segment argmax:t: the data has no axis 't' (the source's axes"),
        ({"threshold": "c=3:>0.5"}, "channel c=3 is outside the data, which keeps c=0:3"),
        ({"threshold": "c=0:>0.5", "roi": {"c": (1, 3)}}, "which keeps c=1:3"),
        ({"segment": "argmax:c", "dtype": "bool"}, "makes labels 0..3, more than dtype bool"),
    ]
    for fields, says in cases:
        with pytest.raises(ExportError, match=re.escape(says)):
            build_plan(
                src, le.ExportSettings(format="npy", output=str(tmp_path / "o.npy"), **fields)
            )


def test_threshold_channels_are_the_source_s_and_a_cutout_keeps_them():
    data = probabilities((3, 8, 8, 4))
    settings = le.ExportSettings(threshold="c=2:<0.25", roi={"c": (1, 4), "y": (2, 7)})
    got = build_plan(zyxc(data), settings).result.values
    np.testing.assert_array_equal(got, data[:, 2:7, :, 2] < 0.25)


def test_a_larger_integer_dtype_converts_the_labels(tmp_path):
    data = probabilities((3, 8, 8, 4))
    out = tmp_path / "o.npy"
    le.export(
        zyxc(data),
        le.ExportSettings(segment="argmax:c", dtype="int32", format="npy", output=str(out)),
    )
    got = np.load(out)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.argmax(data, axis=3) + 1)


def test_equal_settings_give_the_same_token(tmp_path):
    data = probabilities((3, 8, 8, 2))
    np.save(tmp_path / "p.npy", data)
    tokens = {
        plan_token(
            build_plan(
                str(tmp_path / "p.npy"),
                le.ExportSettings(segment=text, format="zarr", output=str(tmp_path / "o.zarr")),
            )
        )
        for text in ("argmax", "argmax:c", "ARGMAX:c")
    }
    assert len(tokens) == 1


# ------------------------------------------------------------------------------------------
# OME-Zarr: a label image


def test_ome_zarr_label_image_metadata_and_mode_pyramid(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.image_label import ImageLabel

    data = probabilities((4, 64, 80, 3), seed=3)
    out = tmp_path / "seg.ome.zarr"
    le.export(
        zyxc(data),
        le.ExportSettings(segment="argmax:c", format="ome-zarr", output=str(out), levels=3),
    )
    group = zarr.open_group(str(out), mode="r")
    ome = zarr_attrs(group)["ome"]
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["z", "y", "x"]
    label = ome["image-label"]
    assert [c["label-value"] for c in label["colors"]] == [0, 1, 2, 3]
    assert label["colors"][0]["rgba"][3] == 0  # no label: transparent
    assert [p["class"] for p in label["properties"]] == ["none", "c=0", "c=1", "c=2"]
    level0 = read_all(group["0"])
    np.testing.assert_array_equal(level0, np.argmax(data, axis=3) + 1)
    # the pyramid takes the most frequent label: no label appears that was not there
    for i in (1, 2):
        assert set(np.unique(read_all(group[str(i)]))) <= {1, 2, 3}
    assert isinstance(open_ome_zarr(group), ImageLabel)
    nodes = list(Reader(parse_url(str(out)))())
    assert nodes[0].load(Label) is not None  # napari-ome-zarr: a labels layer


def test_downsample_given_wins_and_zarr_v2_gets_the_metadata_too(tmp_path):
    data = np.zeros((2, 8, 8, 2), np.float32)
    data[..., 1] = 1.0
    data[:, ::2, ::2, 0] = 2.0  # one pixel in four is label 1
    out = tmp_path / "v2.ome.zarr"
    settings = le.ExportSettings(
        segment="argmax:c", format="ome-zarr", output=str(out), levels=2, zarr_format=2
    )
    le.export(zyxc(data), settings)
    group = zarr.open_group(str(out), mode="r")
    assert zarr_attrs(group)["image-label"]["version"] == "0.4"
    assert (read_all(group["1"]) == 2).all()  # the mode
    le.export(zyxc(data), settings.replace(downsample="nearest"), overwrite=True)
    assert (read_all(zarr.open_group(str(out), mode="r")["1"]) == 1).all()


def test_a_bool_mask_is_not_an_ngff_label_image(tmp_path):
    out = tmp_path / "m.ome.zarr"
    le.export(
        zyxc(probabilities((2, 8, 8, 2))),
        le.ExportSettings(threshold="c=0:>0.5", dtype="bool", format="ome-zarr", output=str(out)),
    )
    assert "image-label" not in zarr_attrs(zarr.open_group(str(out), mode="r"))["ome"]


# ------------------------------------------------------------------------------------------
# every way to run an export


@pytest.fixture
def ilastik_file(tmp_path):
    data = probabilities((8, 24, 28, 3), seed=4, nan=0.05)
    return write_hdf5(tmp_path / "probs.h5", data, "zyxc", "exported_data", (4, 8, 8, 3))


def test_cli_plan_and_export(tmp_path, ilastik_file):
    out = tmp_path / "seg.zarr"
    args = [ilastik_file.spec, "--segment", "argmax:c", "--format", "zarr", "--output", out]
    plan = run_cli("export", *args, "--roi", "z=1:7", "--plan")
    assert plan.returncode == 0, plan.stderr
    assert "result     zyx (6, 24, 28) uint8" in plan.stdout and not out.exists()
    assert "-> segment argmax:c (labels 1..3, uint8)" in plan.stdout
    assert "reads 3.00 input pixels per output pixel" in plan.stdout
    done = run_cli("export", *args, "--roi", "z=1:7")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(
        read_all(zarr.open_array(str(out))), expected_argmax(ilastik_file.data[1:7], 3)
    )
    both = run_cli("export", *args, "--threshold", "c=0:>0.5")
    assert both.returncode == 2
    assert both.stderr.strip().splitlines() == [
        "error: give segment or threshold, not both: each makes the label image from the channels"
    ]


def test_project_files(tmp_path, ilastik_file):
    project = tmp_path / "p.toml"
    project.write_text(
        f'[settings]\nformat = "hdf5"\nthreshold = "c=2:>=0.5"\n'
        f'output = "{tmp_path}/{{nickname}}_mask.h5"\n'
        f'[[datasets]]\nsource = "{ilastik_file.spec}"\nnickname = "a"\n'
    )
    run = run_cli("batch", project, "export-all")
    assert run.returncode == 0, run.stderr
    with h5py.File(tmp_path / "a_mask.h5", "r") as f:
        got = f["exported_data"][...]
    np.testing.assert_array_equal(got, ilastik_file.data[..., 2] >= 0.5)


def test_preview_shows_the_labels(tmp_path, ilastik_file):
    settings = le.ExportSettings(segment="argmax:c", format="zarr", output=str(tmp_path / "s.zarr"))
    le.export(ilastik_file.spec, settings)
    planes = le.preview(ilastik_file.spec, settings, at={"z": 3})
    want = expected_argmax(ilastik_file.data[3], 2)
    assert planes["raw"].dims == ("y", "x", "c")
    for layer in ("live", "disk"):
        assert planes[layer].dims == ("y", "x")
        np.testing.assert_array_equal(planes[layer].values, want)


def test_regions(tmp_path, ilastik_file):
    regions = {"a": {"z": (0, 3)}, "b": {"z": (2, 8), "x": (5, 20)}}
    settings = le.ExportSettings(
        segment="argmax:c", format="zarr", regions=regions,
        output=str(tmp_path / "r" / "{region}.zarr"),
    )  # fmt: skip
    le.export(ilastik_file.spec, settings)
    for name, roi in regions.items():
        box = tuple(slice(*roi.get(a, (None, None))) for a in "zyx")
        got = read_all(zarr.open_array(str(tmp_path / "r" / f"{name}.zarr")))
        np.testing.assert_array_equal(got, expected_argmax(ilastik_file.data[box], 3))


def test_compute_false_then_worker_processes(tmp_path, ilastik_file):
    out = tmp_path / "l.zarr"
    lazy = le.export(
        ilastik_file.spec,
        le.ExportSettings(threshold="c=1:<0.3", format="zarr", output=str(out)),
        compute=False,
    )
    assert not out.exists()
    dask.compute(lazy, scheduler="processes")
    np.testing.assert_array_equal(
        read_all(zarr.open_array(str(out))), ilastik_file.data[..., 1] < 0.3
    )


def test_scheduler_processes(tmp_path, ilastik_file):
    out = tmp_path / "p.zarr"
    le.export(
        ilastik_file.spec,
        le.ExportSettings(segment="argmax:c", format="zarr", output=str(out)),
        scheduler="processes",
    )
    np.testing.assert_array_equal(
        read_all(zarr.open_array(str(out))), expected_argmax(ilastik_file.data, 3)
    )


def test_the_lazy_result_is_the_labels(tmp_path):
    data = probabilities((4, 10, 12, 3), nan=0.3)
    src = write_zarr3(tmp_path / "p.zarr", data, "zyxc", (2, 5, 5, 1))
    plan = build_plan(src.spec, le.ExportSettings(segment="argmax:c", format="npy"))
    np.testing.assert_array_equal(plan.result.values, expected_argmax(data, 3))


# ------------------------------------------------------------------------------------------
# docs/usage.md's example: an ilastik probability map to a segmentation in OME-Zarr


def _usage_example() -> list[str]:
    text = (ROOT / "docs" / "usage.md").read_text()
    section = text.split("### Segment and threshold", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    (line,) = [line for line in block.splitlines() if line.startswith("lazyexport export ")]
    return shlex.split(line)[1:]


def test_the_usage_example_runs(tmp_path):
    args = _usage_example()
    source = args[1]
    assert source.endswith(".h5/exported_data") and "--segment" in args
    data = probabilities((10, 40, 48, 3), seed=5, nan=0.02)
    # as ilastik writes it: axes zyxc (vigra axistags), chunks over whole channels
    write_hdf5(tmp_path / source.rsplit("/", 1)[0], data, "zyxc", "exported_data", (10, 32, 32, 3))
    run = run_cli(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = tmp_path / args[args.index("--output") + 1]
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(read_all(group["0"]), expected_argmax(data, 3))
    assert as_array(group["0"]).dtype == np.uint8
    label = zarr_attrs(group)["ome"]["image-label"]
    assert [c["label-value"] for c in label["colors"]] == [0, 1, 2, 3]
