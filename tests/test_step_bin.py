"""Binning (lazyexport.step_bin): values equal a numpy reduction of the whole cutout window by
window (edge windows cut short), pixel sizes and OME-Zarr's scale and translation follow the
factors, the planner counts what a block reads, and the step works everywhere an export runs
(settings, command line, project files, --plan, preview, regions, compute=False, processes, a
cluster)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any, cast

import dask
import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers import cli_command, cli_env, make_data, write_zarr3
from helpers.binning import reference
from lazyexport import ExportSettings
from lazyexport.errors import SettingsError
from lazyexport.plan import build_plan
from lazyexport.resume import plan_token
from lazyexport.step_bin import Bin

METHODS = ("mean", "max", "min", "mode", "nearest")


def labels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, shape).astype("uint8")


@pytest.fixture
def chunk_blocks(monkeypatch):
    """Blocks of one output chunk (the planner's cap on a block's bytes never refuses one)."""
    monkeypatch.setenv("LAZYEXPORT_MAX_BLOCK_BYTES", "1")
    monkeypatch.setattr(importlib.import_module("lazyexport.plan"), "MAX_BLOCK_BYTES", 1)


@pytest.mark.parametrize("method", METHODS)
def test_binning_equals_numpy_for_every_method_in_one_chunk_blocks(tmp_path, chunk_blocks, method):
    data = labels((21, 70, 66)) if method == "mode" else make_data("uint16", (21, 70, 66))
    src = write_zarr3(tmp_path / "src.zarr", data, chunks=(4, 16, 16))
    roi = {"z": (3, 20), "y": (5, 70), "x": (1, 66)}  # starts mid-chunk, odd lengths
    factors = {"z": 2, "y": 3, "x": 4}
    cut = data[3:20, 5:70, 1:66]
    expected = reference(cut, (2, 3, 4), method)
    settings = ExportSettings(
        roi=roi,
        bin=factors,
        bin_method=method,
        format="zarr",
        output=str(tmp_path / "o.zarr"),
        chunks={"z": 2, "y": 5, "x": 3},
    )
    plan = build_plan(src.spec, settings, memory_limit="16MiB")
    assert plan.shape == expected.shape and plan.block == (2, 5, 3)
    le.export(src.spec, settings, memory_limit="16MiB")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[:], expected)
    np.testing.assert_array_equal(plan.result.values, expected)  # the lazy result


def test_float_means_and_a_factor_larger_than_the_axis(tmp_path):
    data = make_data("float32", (5, 33, 40))
    out = le.export(
        data,
        ExportSettings(bin={"z": 8, "x": 3}, format="zarr", output=str(tmp_path / "o.zarr")),
    )
    got = np.asarray(le.open_exported(out))
    np.testing.assert_allclose(got, reference(data, (8, 1, 3), "mean"), rtol=1e-6)
    assert got.shape == (1, 33, 14) and got.dtype == np.float32


def test_the_step_alone_maps_regions_to_whole_windows():
    step = Bin("zyx", {"z": 2, "x": 4})
    assert step.output_shape((7, 5, 9)) == (4, 5, 3)
    assert step.source_region((slice(1, 4), slice(0, 5), slice(2, 3)), (7, 5, 9)) == (
        slice(2, 7),
        slice(0, 5),
        slice(8, 9),
    )
    assert step.scale((7, 5, 9)) == (2.0, 1.0, 4.0)
    assert step.origin((7, 5, 9)) == (0.5, 0.0, 1.5)
    assert Bin("zyx", {"z": 2}, "nearest").origin((7, 5, 9)) == (0.0, 0.0, 0.0)
    assert step.describe() == "bin z=2,x=4 (mean)"


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given,message",
    [
        ({"bin": {"z": 0}}, "must be 1 or more"),
        ({"bin": {"z": 1.5}}, "must be a whole number"),
        ({"bin": {"zz": 2}}, "not an axis letter"),
        ({"bin": {}}, "bin must map axis letters"),
        ({"bin": {"z": 2}, "bin_method": "median"}, "bin_method must be one of"),
        ({"bin_method": "max"}, "bin_method needs bin"),
    ],
)
def test_bad_bin_settings_are_refused_in_one_line(given, message):
    with pytest.raises(SettingsError, match=message) as found:
        ExportSettings(**given)
    assert "\n" not in str(found.value)


def test_an_axis_the_source_lacks_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="bin names axis t, which the source"):
        build_plan(np.zeros((4, 4, 4), "uint8"), ExportSettings(bin={"t": 2}))


def test_bin_settings_round_trip_and_give_one_plan_token(tmp_path):
    settings = ExportSettings(bin=cast(Any, {"Z": "2", "y": 4}), bin_method="max", format="zarr")
    assert settings.bin == {"z": 2, "y": 4}
    assert settings.to_dict()["bin"] == {"z": 2, "y": 4}
    again = ExportSettings.from_json(settings.to_json())
    assert again == settings
    np.save(tmp_path / "a.npy", np.zeros((8, 8, 8), "uint8"))
    data = str(tmp_path / "a.npy")
    tokens = {plan_token(build_plan(data, s)) for s in (settings, again)}
    assert len(tokens) == 1
    other = plan_token(build_plan(data, settings.replace(bin_method="min")))
    assert other not in tokens


# -- pixel sizes, OME-Zarr ------------------------------------------------------------------------


def test_pixel_sizes_multiply_and_ome_zarr_puts_a_pixel_at_its_window_centre(tmp_path):
    data = make_data("uint16", (13, 30, 27))
    out = str(tmp_path / "o.ome.zarr")
    settings = ExportSettings(
        roi={"z": (1, 13), "y": (3, 30)},
        bin={"z": 2, "y": 4},
        format="ome-zarr",
        output=out,
        pixel_size={"z": 2.0, "y": 0.5, "x": 0.5},
        levels=2,
    )
    plan = build_plan(data, settings)
    assert plan.pixel_size == {"z": 4.0, "y": 2.0, "x": 0.5}
    le.export(data, settings)
    attrs: Any = zarr.open_group(out, mode="r").attrs.asdict()
    image = attrs["ome"]["multiscales"][0]
    level0 = image["datasets"][0]["coordinateTransformations"]
    assert level0[0] == {"type": "scale", "scale": [4.0, 2.0, 0.5]}
    # a binned pixel's centre: (cutout start + (f - 1) / 2) source pixels
    assert level0[1]["translation"] == [(1 + 0.5) * 2.0, (3 + 1.5) * 0.5, 0.0]
    nearest = settings.replace(bin_method="nearest", output=str(tmp_path / "n.ome.zarr"))
    le.export(data, nearest)
    attrs = zarr.open_group(str(tmp_path / "n.ome.zarr"), mode="r").attrs.asdict()
    image = attrs["ome"]["multiscales"][0]
    assert image["datasets"][0]["coordinateTransformations"][1]["translation"] == [2.0, 1.5, 0.0]


@pytest.mark.parametrize("fmt,name", [("hdf5", "o.h5"), ("tiff", "o.tif"), ("n5", "o.n5")])
def test_every_format_that_writes_pixel_sizes_writes_the_binned_ones(tmp_path, fmt, name):
    settings = ExportSettings(
        bin={"z": 2, "x": 4},
        format=fmt,
        output=str(tmp_path / name),
        pixel_size={"z": 1.0, "y": 0.5, "x": 0.25},
    )
    back = le.open_exported(le.export(np.zeros((8, 20, 20), "uint16"), settings))
    assert back.attrs["pixel_size"] == {"z": 2.0, "y": 0.5, "x": 1.0}


# -- the planner ----------------------------------------------------------------------------------


def test_the_plan_counts_what_a_block_reads(tmp_path):
    data = make_data("uint16", (64, 128, 128))
    src = write_zarr3(tmp_path / "src.zarr", data, chunks=(16, 32, 32))
    base = ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"))
    plain = build_plan(src.spec, base, memory_limit="64MiB")
    binned = build_plan(src.spec, base.replace(bin={"z": 2, "y": 2, "x": 2}), memory_limit="64MiB")
    # the same source is read, once: each output pixel reads its window
    assert binned.priced.needed == plain.priced.needed == data.nbytes
    assert binned.priced.decoded == data.nbytes and binned.priced.amplification == 1.0
    blocks = [s for s in binned.summary()["steps"] if s["reads_per_pixel"] is not None]
    assert blocks and blocks[0]["step"] == "bin z=2,y=2,x=2 (mean)"
    assert blocks[0]["reads_per_pixel"] == 8.0
    # a task holds its block's source region: 8 times its block
    assert binned.priced.piece_bytes == 8 * binned.priced.out
    text = str(binned)
    assert "bin z=2,y=2,x=2 (mean): reads 8.00 input pixels per output pixel" in text
    # a cutout that starts inside a chunk decodes the chunks on its edges
    cut = build_plan(
        src.spec,
        base.replace(bin={"z": 2, "y": 2, "x": 2}, roi={"y": (5, 128)}),
        memory_limit="64MiB",
    )
    assert cut.priced.needed == data.nbytes and cut.priced.amplification >= 1.0


def test_a_small_budget_makes_small_blocks_of_whole_windows(tmp_path):
    data = make_data("uint16", (64, 256, 256))
    src = write_zarr3(tmp_path / "src.zarr", data, chunks=(8, 64, 64))
    settings = ExportSettings(
        bin={"z": 4, "y": 4, "x": 4}, format="zarr", output=str(tmp_path / "o.zarr")
    )
    plan = build_plan(src.spec, settings, memory_limit="16MiB")
    # a task's peak (its block's source region among it) fits the budget
    assert plan.priced.task_peak * plan.in_flight <= 16 * 2**20
    assert plan.priced.piece_bytes == 64 * plan.priced.out


# -- everywhere an export runs --------------------------------------------------------------------


def test_cli_bin_option_plan_and_export(tmp_path):
    data = make_data("uint16", (10, 40, 40))
    np.save(tmp_path / "a.npy", data)
    args = ["export", str(tmp_path / "a.npy"), "--format", "zarr", "--output"]
    args += [str(tmp_path / "o.zarr"), "--bin", "y=2,x=4:max"]
    shown = subprocess.run(
        cli_command(*args, "--plan"), capture_output=True, text=True, env=cli_env(), check=True
    ).stdout
    assert "step       bin y=2,x=4 (max): reads 8.00 input pixels per output pixel" in shown
    subprocess.run(cli_command(*args), capture_output=True, env=cli_env(), check=True)
    got = zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[:]
    np.testing.assert_array_equal(got, reference(data, (1, 2, 4), "max"))
    bad = subprocess.run(
        cli_command(*args[:-2], "--bin", "q=2"), capture_output=True, text=True, env=cli_env()
    )
    assert bad.returncode != 0 and "bin names axis q" in bad.stderr


def test_a_project_file_bins(tmp_path):
    data = make_data("uint16", (6, 20, 20))
    np.save(tmp_path / "a.npy", data)
    (tmp_path / "p.toml").write_text(
        f'[settings]\nformat = "zarr"\nbin = {{ y = 2, x = 2 }}\nbin_method = "min"\n'
        f'output = "{tmp_path}/{{nickname}}.zarr"\n\n[[datasets]]\nsource = "{tmp_path}/a.npy"\n'
    )
    done = subprocess.run(
        cli_command("batch", str(tmp_path / "p.toml"), "export-all"),
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stderr
    got = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[:]
    np.testing.assert_array_equal(got, reference(data, (1, 2, 2), "min"))


def test_preview_live_and_disk_layers_are_binned(tmp_path):
    data = make_data("uint16", (13, 30, 27))
    settings = ExportSettings(
        roi={"z": (1, 13), "y": (3, 30)},
        bin={"z": 2, "y": 4, "x": 3},
        format="zarr",
        output=str(tmp_path / "o.zarr"),
    )
    le.export(data, settings)
    planes = le.preview(data, settings, at={"z": 6})
    expected = reference(data[1:13, 3:30], (2, 4, 3), "mean")[(6 - 1) // 2]
    np.testing.assert_array_equal(planes["live"].values, expected)
    np.testing.assert_array_equal(planes["disk"].values, expected)
    assert list(planes["live"]["y"].values) == list(range(3, 30, 4))
    assert planes["raw"].shape == (27, 27)


def test_regions_are_binned_each(tmp_path):
    data = make_data("uint16", (12, 40, 40))
    settings = ExportSettings(
        regions={"a": {"z": (0, 6)}, "b": {"z": (5, 12), "y": (1, 40)}},
        bin={"y": 2, "x": 2},
        format="zarr",
        output=str(tmp_path / "{region}.zarr"),
    )
    le.export(data, settings)
    for name, cut in (("a", data[0:6]), ("b", data[5:12, 1:40])):
        got = zarr.open_array(str(tmp_path / f"{name}.zarr"), mode="r")[:]
        np.testing.assert_array_equal(got, reference(cut, (1, 2, 2), "mean"))


def test_compute_false(tmp_path, chunk_blocks):
    data = make_data("uint16", (12, 64, 64))
    settings = ExportSettings(
        roi={"y": (3, 64)}, bin={"z": 3, "x": 2}, format="zarr", output=str(tmp_path / "o.zarr")
    )
    task = le.export(data, settings.replace(chunks={"z": 2}), compute=False)
    dask.compute(task)
    got = zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[:]
    np.testing.assert_array_equal(got, reference(data[:, 3:], (3, 1, 2), "mean"))


@pytest.mark.parametrize("scheduler", ["processes", "local-cluster"])
def test_processes_and_a_cluster(tmp_path, chunk_blocks, scheduler):
    data = make_data("uint16", (16, 64, 64))
    settings = ExportSettings(
        roi={"z": (1, 16)},
        bin={"z": 2, "y": 2},
        format="zarr",
        output=str(tmp_path / "o.zarr"),
        chunks={"z": 2},
    )
    expected = reference(data[1:], (2, 2, 1), "mean")
    # (local-cluster: a LocalCluster of worker processes, started and closed by the export)
    le.export(data, settings, memory_limit="16MiB", scheduler=scheduler)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[:], expected)


def test_plan_json_lists_the_steps(tmp_path):
    data = make_data("uint16", (8, 16, 16))
    plan = build_plan(data, ExportSettings(bin={"x": 2}, dtype="float32"))
    steps = json.loads(json.dumps(plan.summary()))["steps"]
    assert [s["step"] for s in steps][1:] == ["bin x=2 (mean)", "convert"]


MEMORY_SCRIPT = """
import json, sys
import lazyexport as le
source, output, method = sys.argv[1:]
settings = le.ExportSettings(
    bin={"z": 2, "y": 2, "x": 2}, bin_method=method, format="zarr", output=output
)
plan = le.plan(source, settings, memory_limit="64MiB")
le.run.execute(plan)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak": int(hwm.split()[1]) * 1024, "projected": plan.costs.projected_peak,
                  "baseline": plan.costs.baseline}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mean", "mode"])
def test_binning_peaks_as_projected(tmp_path, method):
    import dask.array as da

    from lazyexport.demo import smooth_volume

    volume = smooth_volume((32, 1024, 1024), (16, 256, 256))  # 128 MiB of float32
    store = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=volume.shape, chunks=(16, 256, 256), dtype="float32"
    )
    da.store(volume.astype("float32"), cast(Any, store), lock=False)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_SCRIPT,
            str(tmp_path / "s.zarr"),
            str(tmp_path / "o"),
            method,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["peak"] <= found["baseline"] + 64 * 2**20 + 32 * 2**20, found
    assert 0.75 <= found["peak"] / found["projected"] <= 1.25, found
