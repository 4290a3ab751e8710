"""Replacing and deleting outputs (issue 26): the files of a sequence's template are exactly the
last export's, older ones go with its commit; a node deleted from a store with consolidated
metadata leaves its listing; a full disk is one line and ``clean`` removes what it left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers import hidden_temps, run_cli
from helpers.zarr_nodes import read_all
from lazyexport import remote
from lazyexport.batch import Dataset
from lazyexport.errors import OutputExistsError

SLICES = np.arange(20 * 8 * 8, dtype=np.uint16).reshape(20, 8, 8)


def _sequence(tmp_path: Path, stop: int, fmt: str = "tiff-sequence", **options):
    template = str(
        tmp_path / "seq" / ("s{slice_index}.tif" if "tiff" in fmt else "s{slice_index}.png")
    )
    settings = le.ExportSettings(format=fmt, output=template, roi={"z": (0, stop)})
    return le.export(le.open_source(SLICES, axes="zyx"), settings, **options)


def _others(tmp_path: Path) -> dict[str, str]:
    """Files beside the slices that are not the template's: left alone by everything."""
    mine = {"notes.txt": "mine", "t3.tif": "other", "s.tif": "no index", "s7.txt": "text"}
    for name, text in mine.items():
        (tmp_path / "seq" / name).write_text(text)
    return mine


@pytest.mark.parametrize("fmt", ["tiff-sequence", "png-sequence"])
def test_an_overwrite_with_fewer_slices_leaves_exactly_the_new_slices(tmp_path, fmt):
    """Item 5: 20 slices, then 15 with --overwrite: s15..s19 go with the commit (before the fix
    they stayed beside the new export); other files in the directory stay."""
    first = _sequence(tmp_path, 20, fmt)
    others = _others(tmp_path)
    with pytest.raises(OutputExistsError, match="exists already"):
        _sequence(tmp_path, 15, fmt)
    result = _sequence(tmp_path, 15, fmt, overwrite=True)
    assert len(first.paths) == 20 and len(result.paths) == 15
    names = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert names == sorted({p.name for p in result.paths} | set(others))
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), SLICES[:15])
    assert hidden_temps(tmp_path) == []


def test_an_old_tail_alone_is_an_existing_output(tmp_path):
    """Only s15..s19 of an earlier export: a new 15-slice export without --overwrite is refused
    (it would remove them at its commit)."""
    _sequence(tmp_path, 20)
    for i in range(15):
        (tmp_path / "seq" / f"s{i:02d}.tif").unlink()
    with pytest.raises(OutputExistsError, match=r"s15\.tif \(and 4 more\) exists already"):
        _sequence(tmp_path, 15)
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == [
        f"s{i}.tif" for i in range(15, 20)
    ]


def test_delete_all_removes_every_file_of_the_template(tmp_path):
    """The project's output is every file its template names: delete-all of the 15-slice
    project removes the earlier 20-slice export's tail too, and nothing else."""
    np.save(tmp_path / "v.npy", SLICES)
    project = le.Batch(
        {
            "format": "tiff-sequence",
            "output": "{dataset_dir}/seq/s{slice_index}.tif",
            "roi": {"z": (0, 15)},
        },
        [Dataset("v.npy", "v")],
        base_dir=tmp_path,
    )
    _sequence(tmp_path, 20)
    others = _others(tmp_path)
    report = project.delete_all()
    assert report.refused == {} and len(report.removed) == 20
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == sorted(others)


def test_a_commit_killed_before_the_old_tail_went_is_finished_by_clean(tmp_path, monkeypatch):
    """The old tail is in the commit's record: a kill after the renames, before s15..s19 went,
    leaves the record, and ``clean`` (as the next export would) finishes the commit."""
    from lazyexport.storage import local as storage

    _sequence(tmp_path, 20)
    real = storage.remove

    def killed(path):
        if Path(path).name == "s15.tif":
            raise KeyboardInterrupt  # the kill, after the renames
        real(path)

    monkeypatch.setattr(storage, "remove", killed)
    with pytest.raises(KeyboardInterrupt):
        _sequence(tmp_path, 15, overwrite=True)
    monkeypatch.undo()
    assert (tmp_path / "seq" / "s15.tif").exists() and hidden_temps(tmp_path)
    storage.clean([tmp_path / "seq"])
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == [
        f"s{i:02d}.tif" for i in range(15)
    ]
    assert hidden_temps(tmp_path) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_delete_all_of_a_node_rewrites_the_consolidated_metadata(tmp_path, zarr_format):
    """Item 6: the store keeps consolidated metadata; deleting the exported node removes it
    from the listing (before the fix, zarr.open_consolidated showed a zero-filled 'exp')."""
    store = tmp_path / "s.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=zarr_format)
    group.create_array("raw", shape=(4, 8, 8), dtype="uint8")[...] = 1
    zarr.consolidate_metadata(str(store))
    project = le.Batch(
        {"format": "zarr", "zarr_format": zarr_format, "output": "{dataset_dir}/s.zarr/exp"},
        [Dataset("s.zarr/raw", "x")],
        base_dir=tmp_path,
    )
    assert project.export_all().ok
    listed = zarr.open_consolidated(str(store), zarr_format=zarr_format)
    assert sorted(listed.keys()) == ["exp", "raw"]
    report = project.delete_all()
    assert report.refused == {} and "only this node" in report.removed[0]
    listed = zarr.open_consolidated(str(store), zarr_format=zarr_format)
    assert sorted(listed.keys()) == ["raw"] and (read_all(listed["raw"]) == 1).all()


@pytest.fixture(scope="module")
def s3():
    from helpers.objstore import s3_bucket

    with s3_bucket("lzx") as server:
        yield server


def _datasets(s3, key: str) -> list[str]:
    import io

    import h5py

    body = s3.client().get_object(Bucket="lzx", Key=key)["Body"].read()
    with h5py.File(io.BytesIO(body), "r") as f:
        return sorted(f)


def test_a_dataset_goes_into_a_remote_hdf5_file_beside_the_others(s3, tmp_path):
    """Item 7: before the fix, s3://lzx/f.h5/b was refused as existing when only the file (with
    dataset a) did, and --overwrite uploaded a file holding b alone. Now b is added, as to a
    local file; b itself exists afterwards (refused without --overwrite, replaced with it)."""
    np.save(tmp_path / "v.npy", SLICES[:4])
    for name in ("a", "b"):
        run = run_cli("export", "v.npy", "--output", f"s3://lzx/f.h5/{name}", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    assert _datasets(s3, "f.h5") == ["a", "b"]
    again = run_cli("export", "v.npy", "--output", "s3://lzx/f.h5/b", cwd=tmp_path)
    assert again.returncode == 2 and "s3://lzx/f.h5/b exists already" in again.stderr
    run = run_cli("export", "v.npy", "--output", "s3://lzx/f.h5/b", "--overwrite", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert _datasets(s3, "f.h5") == ["a", "b"]
    project = le.Batch(
        {"format": "hdf5", "output": "s3://lzx/f.h5/b"}, [Dataset("v.npy", "v")], base_dir=tmp_path
    )
    report = project.delete_all()  # a file at a URL is replaced whole: b alone is not removed
    assert "holds other datasets besides b" in report.refused["v"]
    assert _datasets(s3, "f.h5") == ["a", "b"]


def test_a_remote_consolidated_store_is_relisted_when_a_node_is_deleted(s3, tmp_path):
    """Item 6 at a URL: the node's keys go, and the store's consolidated listing with them."""
    np.save(tmp_path / "v.npy", SLICES[:4])
    store = zarr.open_group(
        remote.zarr_store(remote.as_path("s3://lzx/c.zarr"), read_only=False), mode="w"
    )
    store.create_array("raw", shape=(2, 2), dtype="uint8")[...] = 1
    zarr.consolidate_metadata(remote.zarr_store(remote.as_path("s3://lzx/c.zarr"), read_only=False))
    project = le.Batch(
        {"format": "zarr", "output": "s3://lzx/c.zarr/exp"}, [Dataset("v.npy", "v")],
        base_dir=tmp_path,
    )  # fmt: skip
    assert project.export_all().ok
    listed = zarr.open_consolidated(remote.zarr_store(remote.as_path("s3://lzx/c.zarr")), mode="r")
    assert sorted(listed.keys()) == ["exp", "raw"]
    assert project.delete_all().refused == {}
    listed = zarr.open_consolidated(remote.zarr_store(remote.as_path("s3://lzx/c.zarr")), mode="r")
    assert sorted(listed.keys()) == ["raw"]


def test_a_sequence_whose_template_names_the_source_s_slices_is_refused(tmp_path):
    """Every file of the template is the output (a longer earlier export's tail goes with the
    commit), so a template the source's own slices match - numbered with other digits than
    this cutout's (img_00..img_11 vs img_0..img_4) - holds the source and is refused, never
    replaced with --overwrite (found in review: the source's 12 files were deleted)."""
    import tifffile

    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(12):
        tifffile.imwrite(folder / f"img_{i:02d}.tif", SLICES[i])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    settings = le.ExportSettings(
        format="tiff-sequence", output=str(folder / "img_{slice_index}.tif"), roi={"z": (0, 5)}
    )
    with pytest.raises(le.ExportError, match="is a file of the source"):
        le.export(le.open_source(str(folder / "img_*.tif")), settings, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
