"""The export widget in napari (lazyexport.napari_widget) against napari's ViewerModel, headless.

Qt runs on its offscreen platform (set here, before Qt is imported), with no canvas: the widget
makes no canvas call. Each control builds the settings the ``lazyexport export`` command builds
from the same choice; Export All / Delete All leave what ``lazyexport batch`` leaves; the layers
hold what lazyexport.preview and an independent reader give; Cancel leaves nothing; a mistake
is the command's one line, in the widget.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import runpy
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402

from helpers import arange, snapshot, write_hdf5  # noqa: E402
from lazyexport.batch import Batch  # noqa: E402
from lazyexport.cli import main, make_parser  # noqa: E402
from lazyexport.cli_settings import settings_from_args  # noqa: E402
from lazyexport.napari_controls import set_text  # noqa: E402
from lazyexport.napari_model import TEXT_OPTIONS  # noqa: E402
from lazyexport.napari_widget import FILE_SOURCE, ExportWidget  # noqa: E402
from lazyexport.preview import preview  # noqa: E402
from lazyexport.step_settings import STEP_SETTINGS  # noqa: E402

SHAPE = (6, 20, 24)
WAIT_MS = 30_000


@pytest.fixture
def source(tmp_path) -> str:
    write_hdf5(tmp_path / "src.h5", arange(SHAPE, "uint16"))
    return str(tmp_path / "src.h5/volume/raw")


@pytest.fixture
def widget(qtbot, source):
    w = ExportWidget(ViewerModel())
    qtbot.addWidget(w)
    w.source_text.setText(source)
    w.describe()
    return w


def cli_settings(source: str, *options: str):
    return settings_from_args(make_parser().parse_args(["export", source, *options]))


def wait(qtbot, w: ExportWidget) -> None:
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT_MS)


def test_every_control_exists(widget):
    assert set(widget.controls.text) == set(TEXT_OPTIONS)
    assert set(STEP_SETTINGS) <= set(widget.controls.text)  # one control per registered step
    assert list(widget.controls.roi) == ["z", "y", "x"]  # a start and a stop per source axis
    assert {
        "Describe", "From Shapes rectangle", "From current plane", "Show plan", "Preview layers",
        "Export", "Cancel", "Load project...", "Save settings...", "Export All", "Delete All",
    } == set(widget.buttons)  # fmt: skip
    assert [widget.controls.renormalize_mode.itemText(i) for i in range(4)] == [
        "none", "fixed", "data range", "percentiles",
    ]  # fmt: skip
    assert "shape     (z=6, y=20, x=24)" in widget.description.toPlainText()
    assert widget.table.columnCount() == 3


# (control, text it is given, the command's options for that choice)
TEXT_CHOICES = [
    ("dtype", "uint8", ["--dtype", "uint8"]),
    ("axis-order", "xzy", ["--axis-order", "xzy"]),
    ("bin", "y=2,x=2:max", ["--bin", "y=2,x=2:max"]),
    ("smooth", "y=1.5,x=1.5", ["--smooth", "y=1.5,x=1.5"]),
    ("segment", "argmax:z", ["--segment", "argmax:z"]),
    ("threshold", "z=1:>100", ["--threshold", "z=1:>100"]),
    ("format", "zarr", ["--format", "zarr"]),
    ("output", "{nickname}_out.h5/data", ["--output", "{nickname}_out.h5/data"]),
    ("compression", "lzf", ["--compression", "lzf"]),
    ("compression-level", "7", ["--compression-level", "7"]),
    ("chunks", "z=2,y=10", ["--chunks", "z=2,y=10"]),
    ("nickname", "cells", ["--nickname", "cells"]),
    ("result-type", "Probabilities", ["--result-type", "Probabilities"]),
]  # fmt: skip


@pytest.mark.parametrize("name, text, options", TEXT_CHOICES, ids=[c[0] for c in TEXT_CHOICES])
def test_each_text_control_builds_the_commands_settings(widget, source, name, text, options):
    set_text(widget.controls.text[name], text)
    built = widget.choices().settings()
    assert built == cli_settings(source, *options)
    if name != "nickname":  # (the nickname names the output, it is no setting)
        assert built != cli_settings(source)  # the control changed something


def test_levels_control(widget, source):
    set_text(widget.controls.text["format"], "ome-zarr")
    set_text(widget.controls.text["levels"], "2")
    built = widget.choices().settings()
    assert built == cli_settings(source, "--format", "ome-zarr", "--levels", "2")
    assert built.levels == 2


def test_cutout_controls(widget, source):
    widget.controls.set_roi({"z": (1, 5)})
    widget.controls.roi["x"][1].setText("-4")
    built = widget.choices().settings()
    assert built == cli_settings(source, "--roi", "z=1:5,x=:-4")
    assert built.roi == {"z": (1, 5), "x": (None, -4)}


@pytest.mark.parametrize(
    "mode, option",
    [("fixed", "0,1:0,255"), ("data range", ":0,255"), ("percentiles", "p0,p1:0,255")],
)
def test_renormalize_controls(widget, source, mode, option):
    widget.controls.renormalize_mode.setCurrentText(mode)
    built = widget.choices().settings()
    assert built == cli_settings(source, "--renormalize", option)
    assert built.renormalize is not None


def test_overwrite_and_memory_limit_are_the_commands_run_options(widget, source):
    widget.controls.overwrite.setChecked(True)
    set_text(widget.controls.text["memory-limit"], "64MiB")
    args = make_parser().parse_args(widget.choices().argv())
    assert (args.overwrite, args.memory_limit) == (True, "64MiB")


def test_saved_settings_equal_the_commands_save_settings(widget, source, tmp_path):
    set_text(widget.controls.text["dtype"], "uint8")
    widget.controls.renormalize_mode.setCurrentText("data range")
    widget.controls.set_roi({"z": (1, 4)})
    out = str(tmp_path / "x.h5")
    set_text(widget.controls.text["output"], out)
    widget.save_settings(str(tmp_path / "widget.toml"))
    options = ["--dtype", "uint8", "--renormalize", ":0,255", "--roi", "z=1:4"]
    saved = ["--save-settings", str(tmp_path / "cli.toml")]
    main(["export", source, *options, "--output", out, "--plan", *saved])
    assert (tmp_path / "widget.toml").read_text() == (tmp_path / "cli.toml").read_text()
    assert widget.project is not None and widget.table.rowCount() == 1  # loaded back


def test_a_mistake_is_the_commands_one_line(qtbot, widget, source, capsys):
    widget.controls.set_roi({"z": (2, 99)})
    widget.buttons["Export"].click()
    wait(qtbot, widget)
    assert main(["export", source, "--roi", "z=2:99", "-q"]) == 2
    line = capsys.readouterr().err.strip()
    assert widget.status.text() == line and line.startswith("error: ") and "\n" not in line
    assert not (Path(source).parent / "src_export.h5").exists()
    set_text(widget.controls.text["compression-level"], "x")
    widget.buttons["Show plan"].click()
    assert widget.status.text() == "error: argument --compression-level: invalid int value: 'x'"


def test_plan_shows_the_commands_plan(widget, source, tmp_path, capsys):
    out = str(tmp_path / "o.zarr")
    set_text(widget.controls.text["output"], out)
    widget.buttons["Show plan"].click()
    main(["export", source, "--output", out, "--plan"])
    shown = widget.plan_view.toPlainText()
    printed = capsys.readouterr().out.strip()
    # the same plan, but for the process's memory baseline at the time
    assert memoryless(shown) == memoryless(printed) and len(shown) > 200
    assert "projected peak" in shown and "read amplification" in shown


def memoryless(plan: str) -> list[str]:
    return [line for line in plan.splitlines() if not line.strip().startswith("memory")]


def test_layer_source_description_and_cutout_from_the_view(qtbot):
    viewer = ViewerModel()
    viewer.add_image(arange((4, 10, 12)), name="cells")
    w = ExportWidget(viewer)
    qtbot.addWidget(w)
    w.layer_box.setCurrentText("cells")
    assert "shape     (z=4, y=10, x=12)" in w.description.toPlainText()
    assert "nickname  cells" in w.description.toPlainText()
    viewer.dims.set_current_step(0, 2)
    w.buttons["From current plane"].click()
    assert w.choices().roi_text() == "z=2:3"
    viewer.add_shapes([[[1, 2], [1, 7], [5, 7], [5, 2]]], shape_type="rectangle")
    w.buttons["From Shapes rectangle"].click()
    assert w.choices().settings().roi == {"z": (2, 3), "y": (1, 5), "x": (2, 7)}
    assert w.choices().nickname() == "cells"


def test_live_preview_plane_is_lazyexport_preview(widget, source):
    set_text(widget.controls.text["bin"], "y=2,x=2")
    widget.controls.set_roi({"z": (1, 5)})
    widget.buttons["Preview layers"].click()
    assert widget.status.text() == ""
    live = widget.viewer.layers["Live Preview"].data
    assert live.chunksize[0] == 1  # a plane per chunk: computed when viewed
    settings = widget.choices().settings()
    expected = preview(source, settings, at={"z": 3}, layers=("live",))["live"].values
    np.testing.assert_array_equal(np.asarray(live[2]), expected)  # output plane 2 = source z 3
    raw = widget.viewer.layers["Raw Data"].data
    np.testing.assert_array_equal(np.asarray(raw), arange(SHAPE, "uint16"))


def test_exported_layer_is_the_file(qtbot, widget, tmp_path):
    out = tmp_path / "out.h5"
    set_text(widget.controls.text["output"], f"{out}/data")
    set_text(widget.controls.text["dtype"], "uint8")
    widget.controls.renormalize_mode.setCurrentText("data range")
    widget.buttons["Export"].click()
    wait(qtbot, widget)
    assert widget.status.text().startswith("wrote hdf5"), widget.status.text()
    with h5py.File(out, "r") as f:
        on_disk = f["data"][()]
    assert on_disk.dtype == np.uint8 and on_disk.max() == 255
    shown = widget.viewer.layers["Exported Image"].data
    np.testing.assert_array_equal(np.asarray(shown), on_disk)
    assert widget.progress.value() == 100


def test_cancel_mid_export_leaves_nothing(qtbot, tmp_path):
    write_hdf5(tmp_path / "big.h5", arange((64, 128, 128), "uint16"), chunks=(1, 128, 128))
    w = ExportWidget(ViewerModel())
    qtbot.addWidget(w)
    w.source_text.setText(str(tmp_path / "big.h5/volume/raw"))
    out = tmp_path / "out.zarr"
    set_text(w.controls.text["output"], str(out))
    set_text(w.controls.text["chunks"], "z=1")
    set_text(w.controls.text["memory-limit"], "160MiB")
    seen = []

    def record(event):  # Cancel, as the button does, after the first block
        seen.append(event)
        w.cancel()

    w._record = record  # type: ignore[method-assign]
    w.buttons["Export"].click()
    assert w.buttons["Cancel"].isEnabled()
    wait(qtbot, w)
    assert seen and seen[0].blocks_total > 1  # cancelled mid-export
    assert w.status.text().startswith("error: ") and "cancel" in w.status.text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5"]  # nothing at the output


PROJECT = """\
[settings]
format = "zarr"
output = "{dataset_dir}/out/{nickname}.zarr"
dtype = "uint8"
renormalize = [[], [0, 255]]

[[datasets]]
source = "a.h5/volume/raw"

[[datasets]]
source = "b.h5/volume/raw"
[datasets.settings]
roi = "z=1:3"
"""


def column(w: ExportWidget, j: int) -> list[str]:
    items = [w.table.item(i, j) for i in range(w.table.rowCount())]
    return [item.text() if item is not None else "" for item in items]


def test_export_all_and_delete_all_leave_what_the_command_leaves(qtbot, tmp_path):
    trees = {}
    for side in ("cli", "widget"):
        root = tmp_path / side
        root.mkdir()
        write_hdf5(root / "a.h5", arange((4, 10, 12)))
        shutil.copy(root / "a.h5", root / "b.h5")
        (root / "project.toml").write_text(PROJECT)
    main(["batch", str(tmp_path / "cli/project.toml"), "export-all", "-q"])
    w = ExportWidget(ViewerModel())
    qtbot.addWidget(w)
    w.load_project(str(tmp_path / "widget/project.toml"))
    assert column(w, 2) == ["-", "-"]
    w.buttons["Export All"].click()
    wait(qtbot, w)
    assert w.status.text().startswith("2 exported, 0 failed"), w.status.text()
    assert column(w, 2) == ["yes", "yes"]  # marked
    assert column(w, 0) == ["a", "b"]
    trees["export-all"] = snapshot(tmp_path / "cli"), snapshot(tmp_path / "widget")
    main(["batch", str(tmp_path / "cli/project.toml"), "delete-all", "--yes"])
    asked: list[list[str]] = []

    def confirm(items: list[str]) -> bool:
        asked.append(items)
        return True

    w.confirm = confirm
    w.buttons["Delete All"].click()
    assert len(asked[0]) == 2
    trees["delete-all"] = snapshot(tmp_path / "cli"), snapshot(tmp_path / "widget")
    for cli_tree, widget_tree in trees.values():
        assert cli_tree == widget_tree
    assert any(name.startswith("out/a.zarr/") for name in trees["export-all"][0])
    assert sorted(trees["delete-all"][0]) == ["a.h5", "b.h5", "project.toml"]


def test_the_manifest_contributes_the_widget():
    import npe2

    manifest = npe2.PluginManifest.from_file(
        Path(__file__).resolve().parents[1] / "lazyexport" / "napari.yaml"
    )
    (widget,) = manifest.contributions.widgets or []
    command = {c.id: c for c in manifest.contributions.commands or []}[widget.command]
    assert command.python_name == "lazyexport.napari_widget:ExportWidget"
    assert FILE_SOURCE  # the widget module imports


def test_the_docs_picture_is_grabbed_from_the_widget(qtbot, tmp_path):
    path = Path(__file__).resolve().parents[1] / "scripts" / "napari_widget_png.py"
    script = runpy.run_path(str(path))
    width, height = script["grab"](str(tmp_path / "widget.png"))
    with Image.open(tmp_path / "widget.png") as picture:
        assert picture.size == (width, height) and height > width > 400
        assert len(np.unique(np.asarray(picture.convert("L")))) > 10  # drawn, not blank


def test_load_shows_a_projects_settings_and_save_keeps_them(qtbot, tmp_path):
    write_hdf5(tmp_path / "a.h5", arange((4, 10, 12)))
    shutil.copy(tmp_path / "a.h5", tmp_path / "b.h5")
    more = 'roi = "z=1:,x=:-2"\nbin = { y = 2 }\ncompression_level = 3\n\n[[datasets]]'
    (tmp_path / "project.toml").write_text(PROJECT.replace("\n[[datasets]]", more, 1))
    w = ExportWidget(ViewerModel())
    qtbot.addWidget(w)
    w.load_project(str(tmp_path / "project.toml"))
    assert "bin" in w.status.text()  # not shown as a control: said so, and kept
    shown = w.choices()
    assert shown.roi_text() == "z=1:,x=:-2" and shown.renormalize_mode == "data range"
    assert shown.options["dtype"] == "uint8" and shown.options["format"] == "zarr"
    assert shown.options["compression-level"] == "3"
    w.save_settings(str(tmp_path / "saved.toml"))
    loaded, saved = (Batch.load(tmp_path / name) for name in ("project.toml", "saved.toml"))
    for nickname in ("a", "b"):
        assert saved.settings_for(nickname) == loaded.settings_for(nickname)
    assert saved.settings_for("a").bin == {"y": 2}
