"""Outputs into a store or container that already exists, or where something else is in the way
(issue 13 items 1 and 14): an export into the source's own Zarr store, N5 container or a nested
group keeps every other node and the store's format; an output that holds its source is
refused; a plain file where a store goes is replaced only with ``overwrite``, and a node inside
a plain file is refused when planning. Each test names the item it guards and failed before its
fix.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers import arange, hidden_temps, run_cli
from helpers.zarr_nodes import as_array, read_all
from lazyexport.errors import FormatError, TemplateError
from lazyexport.plan import build_plan


def test_item01_zarr_export_into_the_sources_store_keeps_every_other_array(zarr_store):
    settings = le.ExportSettings(format="zarr", output=f"{zarr_store}/export", roi={"z": (1, 5)})
    le.export(f"{zarr_store}/raw", settings)
    with pytest.raises(le.ExportError, match="exists already"):
        le.export(f"{zarr_store}/raw", settings)
    le.export(
        f"{zarr_store}/raw", settings.replace(roi={"z": (2, 4)}), overwrite=True
    )  # the case reported
    group = zarr.open_group(str(zarr_store), mode="r")
    assert sorted(group.array_keys()) == ["export", "labels", "raw"]
    np.testing.assert_array_equal(read_all(group["raw"]), arange((6, 8, 10)))
    np.testing.assert_array_equal(read_all(group["labels"]), np.full(3, 9, "uint8"))
    np.testing.assert_array_equal(read_all(group["export"]), arange((6, 8, 10))[2:4])
    assert hidden_temps(zarr_store.parent) == []


def test_item01_zarr_export_into_a_nested_group_of_an_existing_store(zarr_store):
    le.export(
        f"{zarr_store}/raw",
        le.ExportSettings(format="zarr", output=f"{zarr_store}/results/run1/exp"),
    )
    group = zarr.open_group(str(zarr_store), mode="r")
    np.testing.assert_array_equal(read_all(group["results/run1/exp"]), arange((6, 8, 10)))
    np.testing.assert_array_equal(read_all(group["raw"]), arange((6, 8, 10)))


def test_item01_ome_zarr_export_into_the_sources_store_keeps_the_source(zarr_store):
    le.export(
        f"{zarr_store}/raw", le.ExportSettings(format="ome-zarr", output=f"{zarr_store}/image")
    )
    le.export(
        f"{zarr_store}/raw",
        le.ExportSettings(format="ome-zarr", output=f"{zarr_store}/image"),
        overwrite=True,
    )
    group = zarr.open_group(str(zarr_store), mode="r")
    assert {"raw", "labels", "image"} <= set(group.keys())
    np.testing.assert_array_equal(read_all(group["raw"]), arange((6, 8, 10)))
    np.testing.assert_array_equal(read_all(group["image/0"]), arange((6, 8, 10)))


def test_item01_n5_export_into_the_sources_container_keeps_the_source(tmp_path):
    source = le.ExportSettings(format="n5", output=f"{tmp_path}/b.n5/raw")
    le.export(le.open_source(arange((4, 6, 8)), axes="zyx"), source)
    other = le.ExportSettings(format="n5", output=f"{tmp_path}/b.n5/other", dtype="float32")
    le.export(f"{tmp_path}/b.n5/raw", other)
    le.export(f"{tmp_path}/b.n5/raw", other, overwrite=True)
    np.testing.assert_array_equal(
        np.asarray(le.open_source(f"{tmp_path}/b.n5/raw")), arange((4, 6, 8))
    )
    np.testing.assert_array_equal(
        np.asarray(le.open_source(f"{tmp_path}/b.n5/other")), arange((4, 6, 8)).astype("float32")
    )
    assert json.loads((tmp_path / "b.n5" / "attributes.json").read_text())["n5"]


def test_item01_an_output_that_holds_the_source_is_refused(zarr_store, tmp_path):
    with pytest.raises(TemplateError, match="holds the source"):
        le.export(
            f"{zarr_store}/raw",
            le.ExportSettings(format="zarr", output=str(zarr_store)),
            overwrite=True,
        )
    hdf5 = tmp_path / "data.h5"
    le.export(arange((4, 4)), le.ExportSettings(format="hdf5", output=f"{hdf5}/volume/raw"))
    with pytest.raises(TemplateError, match="holds the source"):
        le.export(
            f"{hdf5}/volume/raw",
            le.ExportSettings(format="hdf5", output=f"{hdf5}/volume"),
            overwrite=True,
        )
    np.testing.assert_array_equal(zarr.open_array(str(zarr_store / "raw"))[...], arange((6, 8, 10)))


def test_item01_a_sequence_onto_the_slices_of_its_own_glob_source_is_refused(tmp_path):
    for i in range(3):
        tifffile.imwrite(tmp_path / f"s_{i}.tif", np.full((4, 5), i, np.uint8))
    settings = le.ExportSettings(format="tiff-sequence", output=f"{tmp_path}/s_{{slice_index}}.tif")
    with pytest.raises(TemplateError, match="is a file of the source"):
        le.export(str(tmp_path / "s_*.tif"), settings, overwrite=True)
    assert [int(tifffile.imread(tmp_path / f"s_{i}.tif")[0, 0]) for i in range(3)] == [0, 1, 2]


def test_item01_a_failed_export_into_an_existing_store_changes_nothing(zarr_store, monkeypatch):
    from lazyexport.formats import zarr as zarr_format

    def failing_write(self, block, location):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(zarr_format.ZarrTarget, "write", failing_write)
    before = sorted(p.relative_to(zarr_store) for p in zarr_store.rglob("*"))
    with pytest.raises(RuntimeError):
        le.export(
            f"{zarr_store}/raw", le.ExportSettings(format="zarr", output=f"{zarr_store}/export")
        )
    assert sorted(p.relative_to(zarr_store) for p in zarr_store.rglob("*")) == before
    assert hidden_temps(zarr_store.parent) == []


def test_item01_zarr_format_of_an_existing_store_is_kept(tmp_path):
    store = tmp_path / "v2.zarr"
    zarr.create_array(str(store), shape=(4,), chunks=(4,), dtype="uint8", name="raw", zarr_format=2)
    with pytest.raises(FormatError, match="Zarr v2 store"):
        le.export(arange((4, 4)), le.ExportSettings(format="zarr", output=f"{store}/exp"))
    le.export(
        arange((4, 4)), le.ExportSettings(format="zarr", output=f"{store}/exp", zarr_format=2)
    )
    assert sorted(zarr.open_group(str(store), mode="r").array_keys()) == ["exp", "raw"]


@pytest.mark.parametrize("fmt", ["zarr", "n5", "ome-zarr"])
def test_item14_overwrite_replaces_a_plain_file_where_a_store_goes(tmp_path, fmt):
    out = tmp_path / ("x.n5" if fmt == "n5" else "x.zarr")
    out.write_text("not a store")
    with pytest.raises(le.ExportError, match="exists already"):
        le.export(arange((4, 4)), le.ExportSettings(format=fmt, output=str(out)))
    result = le.export(
        arange((4, 4)), le.ExportSettings(format=fmt, output=str(out)), overwrite=True
    )
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), arange((4, 4)))
    assert out.is_dir() and hidden_temps(tmp_path) == []


@pytest.mark.parametrize("fmt", ["zarr", "n5", "ome-zarr"])
def test_item14_a_node_inside_a_plain_file_is_refused_at_planning(tmp_path, fmt):
    out = tmp_path / ("x.n5" if fmt == "n5" else "x.zarr")
    out.write_text("not a store")
    with pytest.raises(FormatError, match="is a file"):
        build_plan(arange((4, 4)), le.ExportSettings(format=fmt, output=f"{out}/inner"))
    assert out.read_text() == "not a store"


def test_item14_cli_says_so_in_one_line(tmp_path):
    (tmp_path / "x.zarr").write_text("not a store")
    np.save(tmp_path / "v.npy", arange((4, 4)))
    run = run_cli(
        "export", "v.npy", "--format", "zarr", "--output", f"{tmp_path}/x.zarr/inner", cwd=tmp_path
    )
    assert run.returncode == 2 and run.stderr.count("error:") == 1
    assert "is a file, not a Zarr store" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "fmt,container", [("zarr", "new.zarr"), ("n5", "new.n5"), ("hdf5", "new.h5")]
)
def test_item01_a_container_created_by_another_export_meanwhile_is_added_to_not_replaced(
    tmp_path, fmt, container
):
    """Two exports into a store that does not exist yet: the second to finish adds its node
    to the store the first created, instead of replacing it."""
    store = tmp_path / container
    other = le.ExportSettings(format=fmt, output=f"{store}/first")
    started: list[bool] = []

    def meanwhile(event) -> None:
        if not started:
            started.append(True)
            le.export(arange((3, 3)), other)

    mine = le.ExportSettings(format=fmt, output=f"{store}/second", chunks={"z": 1})
    result = le.export(arange((4, 64, 64)), mine, memory_limit="16MiB", progress=meanwhile)
    assert started
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), arange((4, 64, 64)))
    np.testing.assert_array_equal(np.asarray(le.open_source(f"{store}/first")), arange((3, 3)))
    assert hidden_temps(tmp_path) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_item01_consolidated_metadata_of_the_store_lists_the_new_array(tmp_path, zarr_format):
    store = tmp_path / "c.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=zarr_format)
    group.create_array("raw", shape=(2, 2), dtype="uint8")
    zarr.consolidate_metadata(str(store), zarr_format=zarr_format)
    le.export(
        arange((8, 8)),
        le.ExportSettings(format="zarr", output=f"{store}/exp", zarr_format=zarr_format),
    )
    opened = zarr.open_consolidated(str(store), zarr_format=zarr_format)
    assert as_array(opened["exp"]).shape == (8, 8)
    np.testing.assert_array_equal(read_all(opened["exp"]), arange((8, 8)))
