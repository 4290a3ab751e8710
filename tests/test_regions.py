"""Many regions of one source in one run: each output is what a single-region export writes, the
source chunks several regions read are decoded once (counted), and the command line, region
files and project files give the same regions."""

from __future__ import annotations

import itertools

import dask
import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers import make_data, write_hdf5, write_zarr3
from lazyexport import cli
from lazyexport.batch import Batch
from lazyexport.regions import SharedChunks, read_regions
from lazyexport.settings import ExportSettings

SHAPE, CHUNKS = (40, 120, 120), (10, 30, 30)
CHUNK_BYTES = 10 * 30 * 30 * 2  # uint16


@pytest.fixture
def source(tmp_path):
    data = make_data("uint16", SHAPE, seed=3)
    return write_zarr3(tmp_path / "src.zarr", data, chunks=CHUNKS).file, data


def _twenty(aligned: bool) -> dict[str, dict[str, tuple[int, int]]]:
    """20 overlapping boxes; ``aligned``: on chunk boundaries (so the union is whole chunks)."""
    rng = np.random.default_rng(7)
    regions = {}
    for i in range(20):
        box = {}
        for axis, n, c in zip("zyx", SHAPE, CHUNKS):
            if aligned:
                start = int(rng.integers(0, n // c - 1)) * c
                stop = start + c * int(rng.integers(1, 3))
            else:
                start = int(rng.integers(0, n - 12))
                stop = start + int(rng.integers(5, min(45, n - start) + 1))
            box[axis] = (start, min(stop, n))
        regions[f"cell{i:02d}"] = box
    return regions


def _chunks_of(box: dict[str, tuple[int, int]]) -> set[tuple[int, ...]]:
    spans = [range(box[a][0] // c, (box[a][1] - 1) // c + 1) for a, c in zip("zyx", CHUNKS)]
    return set(itertools.product(*spans))


def _union_bytes(regions) -> int:
    """The bytes of the union of the boxes (voxels in at least one box)."""
    covered = np.zeros(SHAPE, bool)
    for box in regions.values():
        covered[tuple(slice(*box[a]) for a in "zyx")] = True
    return int(covered.sum()) * 2


@pytest.mark.parametrize("aligned", [True, False], ids=["chunk-aligned", "any-boxes"])
def test_twenty_regions_equal_single_exports_and_decode_each_chunk_once(
    tmp_path, source, decodes, aligned
):
    path, data = source
    regions = _twenty(aligned)
    settings = ExportSettings(
        regions=regions, format="zarr", output=str(tmp_path / "out" / "{nickname}_{region}.zarr")
    )
    result = le.export(str(path), settings)
    decoded = dict(decodes)
    touched = set().union(*(_chunks_of(b) for b in regions.values()))
    # every chunk decoded once, and only chunks a region reads
    assert set(decoded) == touched and max(decoded.values()) == 1, decoded
    assert result.shared_units > 0 and result.read_again == 0
    if aligned:  # the acceptance figure: decoded bytes <= the union's bytes (here equal)
        assert sum(decoded.values()) * CHUNK_BYTES <= _union_bytes(regions)
    for name, box in regions.items():
        want = data[tuple(slice(*box[a]) for a in "zyx")]
        got = zarr.open_array(str(tmp_path / "out" / f"src_{name}.zarr"))[...]
        np.testing.assert_array_equal(got, want)
        assert result[name].shape == want.shape
    # each region exported alone writes the same array, chunks and codecs
    for name, box in regions.items():
        alone = tmp_path / "alone" / f"{name}.zarr"
        le.export(str(path), ExportSettings(roi=box, format="zarr", output=str(alone)))
        mine, theirs = (
            zarr.open_array(str(p)) for p in (tmp_path / "out" / f"src_{name}.zarr", alone)
        )
        assert (mine.chunks, mine.compressors) == (theirs.chunks, theirs.compressors)
        np.testing.assert_array_equal(mine[...], theirs[...])


def test_separate_exports_decode_shared_chunks_again(tmp_path, source, decodes):
    """The counting is real: exported one by one, overlapping regions decode chunks twice."""
    path, _ = source
    regions = _twenty(True)
    for name, box in regions.items():
        le.export(
            str(path), ExportSettings(roi=box, format="zarr", output=str(tmp_path / f"{name}.zarr"))
        )
    assert max(decodes.values()) > 1


def test_an_hdf5_source_and_transforms(tmp_path):
    data = make_data("uint16", (20, 64, 64), seed=1)
    made = write_hdf5(tmp_path / "s.h5", data, axes="zyx", dataset="raw")
    regions = {"a": {"z": (0, 12), "y": (5, 40)}, "b": {"z": (6, 20), "x": (10, 60)}}
    settings = ExportSettings(
        regions=regions, format="npy", dtype="uint8", renormalize=((0, 65535), (0, 255)),
        axis_order="xyz", output=str(tmp_path / "{region}.npy"),
    )  # fmt: skip
    result = le.export(made.spec, settings)
    assert list(result) == ["a", "b"]
    for name, box in regions.items():
        cut = data[tuple(slice(*box.get(a, (None, None))) for a in "zyx")].astype("float64")
        want = np.clip(np.rint(cut * 255 / 65535), 0, 255).astype("uint8").transpose(2, 1, 0)
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), want)


def test_the_command_line_takes_roi_more_than_once_and_region_files(tmp_path, source, capsys):
    path, data = source
    out = str(tmp_path / "o" / "r_{region}.npy")
    assert cli.main(["export", str(path), "--roi", "z=0:5", "--roi", "z=3:9,y=:10",
                     "--format", "npy", "--output", out, "-q"]) == 0  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "r_region1.npy"), data[0:5])
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "r_region2.npy"), data[3:9, :10])
    assert "region1: wrote npy" in capsys.readouterr().out
    (tmp_path / "r.csv").write_text(
        "name,z_start,z_stop,x_start,x_stop\nleft,0,4,,60\nright,2,,60,\n"
    )
    (tmp_path / "r.toml").write_text(
        '[regions]\nleft = "z=0:4,x=:60"\nright = {z = [2, 40], x = [60, 120]}\n'
    )
    assert read_regions(tmp_path / "r.csv") == read_regions(tmp_path / "r.toml") | {
        "right": {"z": (2, None), "x": (60, None)}
    }
    for kind in ("csv", "toml"):
        target = str(tmp_path / kind / "{region}.npy")
        assert cli.main(["export", str(path), "--regions", str(tmp_path / f"r.{kind}"),
                         "--format", "npy", "--output", target, "-q"]) == 0  # fmt: skip
        np.testing.assert_array_equal(np.load(tmp_path / kind / "left.npy"), data[0:4, :, :60])
        np.testing.assert_array_equal(np.load(tmp_path / kind / "right.npy"), data[2:, :, 60:])
    # --plan shows one plan per region, writing nothing
    assert cli.main(["export", str(path), "--regions", str(tmp_path / "r.csv"), "--format", "npy",
                     "--output", str(tmp_path / "p" / "{region}.npy"), "--plan"]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    assert "left.npy" in shown and "right.npy" in shown and not (tmp_path / "p").exists()


def test_the_default_output_names_each_region(tmp_path, source):
    path, data = source
    le.export(str(path), ExportSettings(regions={"a": "z=0:2", "b": "z=2:4"}, format="npy"))
    np.testing.assert_array_equal(np.load(path.parent / "src_export_b.npy"), data[2:4])


@pytest.mark.parametrize(
    "args,says",
    [
        (["--roi", "z=0:5", "--roi", "z=3:9", "--output", "{dir}/same.npy"],
         "regions 'region1' and 'region2' would both write"),
        (["--output", "{dir}/{region}.npy"], "{region} in the output template"),
        (["--regions", "{dir}/bad.csv"], "column 'zz_start'"),
        (["--regions", "{dir}/twice.csv"], "names region 'a' twice"),
        (["--regions", "{dir}/badname.toml"], "region name 'a b' must be"),
        (["--regions", "{dir}/r.txt"], "must be .csv or .toml"),
        (["--regions", "{dir}/out.toml"], "region 'a': roi names axis 't'"),
        (["--roi", "z=0:1", "--regions", "{dir}/bad.csv"], "not both"),
        (["--roi", "z=0:3,y=0:10", "--roi", "z=2:5,y=50:70", "--format", "tiff-sequence",
          "--output", "{dir}/s/s_{slice_index}.tif", "--overwrite"], "would both write"),
        (["--regions", "{dir}/mixed.toml"], "has a [regions] table and other keys (a)"),
        (["--regions", "{dir}/latin1.csv"], "is not UTF-8 text"),
        (["--regions", "{dir}/dotted.toml"], "region name 'cell.1' must be"),
        (["--regions", "{dir}/header.csv"], "has a header but no regions"),
        (["--regions", "{dir}/samecol.csv"], "has column 'z_start' twice"),
        (["--regions", "{dir}/wide.csv"], "line 2: more cells than the header has columns"),
        (["--roi", "z=0:2", "--roi", "z=2:4", "--output", "{dir}/{region}.npy"],
         "region 'region2': {dir}/region2.npy exists already"),
    ],
)  # fmt: skip
def test_bad_regions_are_one_line_and_write_nothing(tmp_path, source, capsys, args, says):
    path, _ = source
    (tmp_path / "bad.csv").write_text("name,zz_start\na,1\n")
    (tmp_path / "twice.csv").write_text("name,z_start\na,1\na,2\n")
    (tmp_path / "badname.toml").write_text('"a b" = "z=0:1"\n')
    (tmp_path / "out.toml").write_text('a = "t=0:1"\n')
    (tmp_path / "r.txt").write_text("")
    (tmp_path / "mixed.toml").write_text('a = "z=0:5"\n[regions]\nb = "z=1:2"\n')
    (tmp_path / "latin1.csv").write_bytes(b"name,z_start\ncaf\xe9,0\n")
    (tmp_path / "dotted.toml").write_text('"cell.1" = "z=0:1"\n')
    (tmp_path / "header.csv").write_text("name,z_start,z_stop\n\n")
    (tmp_path / "samecol.csv").write_text("name,z_start,z_start\na,1,2\n")
    (tmp_path / "wide.csv").write_text("name,z_start\na,1,2\n")
    np.save(tmp_path / "region2.npy", np.zeros(3))  # an earlier output: refused before region1
    before = sorted(tmp_path.rglob("*"))
    args = [a.replace("{dir}", str(tmp_path)) for a in args]
    says = says.replace("{dir}", str(tmp_path))
    status = cli.main(["export", str(path), "--format", "npy", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert sorted(tmp_path.rglob("*")) == before


def test_project_files_hold_regions(tmp_path, source):
    path, data = source
    project = Batch(
        ExportSettings(
            regions={"top": {"z": (0, 10)}, "edge": {"y": (None, 8)}},
            format="npy",
            output=str(tmp_path / "p" / "{nickname}_{region}.npy"),
        ),  # fmt: skip
        [le.batch.Dataset(str(path), "vol")],
    )
    saved = Batch.load(project.save(tmp_path / "project.toml"))
    assert saved.settings_for("vol").regions == {"top": {"z": (0, 10)}, "edge": {"y": (None, 8)}}
    rows = saved.list()
    assert [r.output.rsplit("/", 1)[-1] for r in rows] == ["vol_top.npy", "vol_edge.npy"]
    report = saved.export_all()
    assert report.ok, report.summary()
    np.testing.assert_array_equal(np.load(tmp_path / "p" / "vol_edge.npy"), data[:, :8])
    assert all(r.exists for r in saved.list())
    deleted = saved.delete_all()
    assert len(deleted.removed) == 2 and not list((tmp_path).glob("p/*.npy"))


def test_compute_false_gives_one_delayed_per_region(tmp_path, source, decodes):
    path, data = source
    regions = {"a": {"z": (0, 20)}, "b": {"z": (10, 30)}}
    lazy = le.export(
        str(path),
        ExportSettings(regions=regions, format="npy", output=str(tmp_path / "{region}.npy")),
        compute=False,
    )
    results = dask.compute(*lazy)
    assert [r.output.name for r in results] == ["a.npy", "b.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), data[10:30])
    assert max(decodes.values()) == 1


def test_regions_on_processes_read_for_themselves_and_say_so(tmp_path, source):
    path, data = source
    result = le.export(
        str(path),
        ExportSettings(
            regions={"a": "z=0:20", "b": "z=10:30"},
            format="npy",
            output=str(tmp_path / "{region}.npy"),
        ),  # fmt: skip
        scheduler="processes",
    )
    assert "sharing them needs the threads scheduler" in str(result)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), data[0:20])


def test_shared_chunks_beyond_the_limit_are_read_again_and_counted():
    data = np.arange(4 * 6, dtype="uint16").reshape(4, 6)
    edges = [(0, 2, 4), (0, 3, 6)]
    regions = [(slice(0, 4), slice(0, 4)), (slice(1, 3), slice(2, 6)), (slice(0, 2), slice(0, 6))]
    shared = SharedChunks(data, edges, data.dtype, regions, limit=2 * 3 * 2)  # one chunk kept
    assert shared.shared == 4  # every chunk is read by two regions or more
    for i, region in enumerate(regions):
        np.testing.assert_array_equal(shared[region], data[region])
        shared.done(i)
    assert shared.again > 0 and shared.held == 0 and not shared.kept
    roomy = SharedChunks(data, edges, data.dtype, regions, limit=10**6)
    for i, region in enumerate(regions):
        np.testing.assert_array_equal(roomy[region], data[region])
        roomy.done(i)
    assert roomy.again == 0 and roomy.held == 0


def test_a_dataset_s_regions_replace_the_shared_roi_and_the_other_way_round(tmp_path, source):
    path, data = source
    project = Batch(
        ExportSettings(roi={"z": (0, 4)}, format="npy", output=str(tmp_path / "{nickname}.npy")),
        [
            le.batch.Dataset(str(path), "plain"),
            le.batch.Dataset(
                str(path),
                "cells",
                settings={"regions": {"a": "z=5:7"}, "output": str(tmp_path / "c_{region}.npy")},
            ),  # fmt: skip
        ],
    )
    assert project.export_all().ok
    np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"), data[0:4])
    np.testing.assert_array_equal(np.load(tmp_path / "c_a.npy"), data[5:7])
    shared_regions = Batch(
        ExportSettings(regions={"a": "z=0:1"}, format="npy", output=str(tmp_path / "{region}")),
        [le.batch.Dataset(str(path), "one", settings={"roi": "z=2:3"})],
    )
    assert shared_regions.settings_for("one").regions is None


def test_lazy_regions_are_checked_as_computed_ones_are(tmp_path, source):
    path, _ = source
    regions = {"a": "z=0:5", "b": "z=3:9"}
    with pytest.raises(le.ExportError, match="take no scheduler"):
        le.export(str(path), ExportSettings(regions=regions), compute=False, scheduler="threads")
    for output in ("same.npy", "one.h5/{region}"):  # one file for two lazy regions: refused
        fmt = "npy" if output.endswith("npy") else "hdf5"
        settings = ExportSettings(regions=regions, format=fmt, output=str(tmp_path / output))
        with pytest.raises(le.ExportError, match="would both write"):
            le.export(str(path), settings, compute=False)
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.h5"))


def test_resume_leaves_finished_regions_and_exports_the_rest(tmp_path, source):
    path, data = source
    out = str(tmp_path / "{region}.zarr")
    le.export(str(path), ExportSettings(regions={"a": "z=0:5"}, format="zarr", output=out))
    before = (tmp_path / "a.zarr" / "zarr.json").stat().st_mtime_ns
    both = ExportSettings(regions={"a": "z=0:5", "b": "z=3:9"}, format="zarr", output=out)
    result = le.export(str(path), both, resume=True)
    assert result.kept == ["a"] and list(result) == ["b"]
    assert "a: kept, its output exists (resume)" in str(result)
    assert (tmp_path / "a.zarr" / "zarr.json").stat().st_mtime_ns == before
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "b.zarr"))[...], data[3:9])


def test_a_sequence_format_without_a_template_names_each_region(tmp_path, source):
    path, data = source
    settings = ExportSettings(regions={"a": "z=0:2", "b": "z=5:6"}, format="tiff-sequence")
    result = le.export(str(path), settings)
    assert [p.name for p in result["b"].paths] == ["src_export_b_5.tif"]
    assert len(result["a"].paths) == 2


def test_the_smallest_memory_limit_still_exports_overlapping_regions(tmp_path, source):
    path, data = source
    settings = ExportSettings(
        regions={"a": "z=0:10", "b": "z=5:20"}, format="npy", output=str(tmp_path / "{region}")
    )
    result = le.export(str(path), settings, memory_limit="16MiB")
    assert "the memory limit is small" in str(result)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), data[5:20])


def test_batch_commands_show_each_region(tmp_path, source, capsys):
    path, _ = source
    project = Batch(
        ExportSettings(
            regions={"top": "z=0:10", "low": "z=30:"},
            format="npy",
            output=str(tmp_path / "{nickname}_{region}"),
        ),  # fmt: skip
        [le.batch.Dataset(str(path), "vol")],
    )
    saved = project.save(tmp_path / "p.toml")
    assert cli.main(["batch", str(saved), "export-all", "--plan"]) == 0
    shown = capsys.readouterr().out
    assert "vol_top.npy" in shown and "vol_low.npy" in shown
    assert cli.main(["batch", str(saved), "export-all", "-q"]) == 0
    out = capsys.readouterr().out
    assert "vol:top: wrote npy" in out and "vol:low: wrote npy" in out and "FAILED" not in out
    assert cli.main(["batch", str(saved), "list"]) == 0
    listed = capsys.readouterr().out
    assert "vol:top" in listed and "vol:low" in listed


def test_a_range_from_the_data_reads_only_the_chunks_of_the_regions(tmp_path, source, decodes):
    path, data = source
    regions = {"a": {"z": (0, 20), "y": (0, 30)}, "b": {"z": (10, 30), "y": (0, 60)}}
    settings = ExportSettings(
        regions=regions, renormalize=(("p1", "p99"), (0, 255)), dtype="uint8", format="npy",
        output=str(tmp_path / "{region}"),
    )  # fmt: skip
    le.export(str(path), settings)
    touched = set().union(*(_chunks_of({**b, "x": (0, 120)}) for b in regions.values()))
    # the percentile pass and the blocks read the regions' chunks, nothing beyond them
    assert set(decodes) == touched and max(decodes.values()) <= 2, decodes
    cut = data[10:30, 0:60].astype("float64")
    lo, hi = np.percentile(cut, (1, 99))
    want = np.clip(np.rint((cut - lo) * 255 / (hi - lo)), 0, 255).astype("uint8")
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), want, atol=1)
