"""Per-level chunks of an OME-Zarr pyramid (issue 29, ``level_chunks`` / ``--level-chunks``):
each level is stored in the chunks asked for it (its shards rounded up to them), levels not named
keep level 0's chunks clipped to their shape; the values are those of an independent mean (or
every other pixel), level 1 is still made in the same pass where the blocks align to its own
write units (and correct where they cannot); ``--plan`` lists every level's chunks; bad values
are refused in one line (exit 2); ome-zarr-py and ngff-zarr read every level."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers.pyramids import built_from
from lazyexport import cli
from lazyexport.formats.ome_zarr import OmeZarrWriter

SHAPE = (32, 64, 64)  # halves evenly three times: an independent mean is a reshape
CHUNKS = {"z": 8, "y": 16, "x": 16}
SHARDS = {"z": 16, "y": 32, "x": 32}
ASKED = "1:z=4,y=8,x=8;2:z=8,y=16,x=16"


def _volume() -> np.ndarray:
    return np.random.default_rng(29).integers(0, 4000, SHAPE).astype("uint16")


def _export(out, level_chunks, method="mean", shards=None, levels=3, chunks=CHUNKS):
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(out),
        chunks=chunks,
        shards=shards,
        levels=levels,
        downsample=method,
        options={"level_chunks": level_chunks},
    )
    plan = le.plan(le.open_source(_volume(), axes="zyx"), settings, memory_limit="64MiB")
    le.run.execute(plan)
    return plan, [np.asarray(zarr.open_array(str(out / str(k)))[...]) for k in range(levels)]


def _independent(level: np.ndarray, method: str) -> np.ndarray:
    """The next level by 2x2x2 windows, computed here without lazyexport."""
    if method == "nearest":
        return level[::2, ::2, ::2]
    z, y, x = level.shape
    windows = level.reshape(z // 2, 2, y // 2, 2, x // 2, 2).astype(np.float64)
    return np.rint(windows.mean(axis=(1, 3, 5))).astype(level.dtype)  # half to even


@pytest.mark.parametrize("method", ["mean", "nearest"])
def test_each_level_has_its_chunks_and_shards_and_the_values_of_an_independent_pyramid(
    tmp_path, monkeypatch, method
):
    out = tmp_path / "o.ome.zarr"
    read = built_from(monkeypatch)
    plan, got = _export(out, ASKED, method, SHARDS)
    stored = [json.loads((out / str(k) / "zarr.json").read_text()) for k in range(3)]
    outer = [m["chunk_grid"]["configuration"]["chunk_shape"] for m in stored]
    inner = [m["codecs"][0]["configuration"]["chunk_shape"] for m in stored]
    assert inner == [[8, 16, 16], [4, 8, 8], [8, 16, 16]]  # level 2's asked, not clipped
    # shards: level 0's; level 1's cover a level-0 shard's region; level 2's level 0's shape
    assert outer == [[16, 32, 32], [8, 16, 16], [8, 16, 16]]  # (level 2: clipped to 8x16x16)
    assert "made in the same pass as level 0" in str(plan)
    assert read == ["1"]  # level 0 not read back: level 1 came from the blocks
    expected = [_volume()]
    for _ in range(2):
        expected.append(_independent(expected[-1], method))
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == b.dtype and np.array_equal(a, b), k


def test_levels_not_named_keep_level_0s_chunks_clipped(tmp_path):
    out = tmp_path / "o.ome.zarr"
    _export(out, {"2": {"y": 4}}, shards="none", levels=4)
    chunks = [zarr.open_array(str(out / str(k))).chunks for k in range(4)]
    # level 2 asked y only: z and x keep level 0's, clipped (z: 8 of 8 long)
    assert chunks == [(8, 16, 16), (8, 16, 16), (8, 4, 16), (4, 8, 8)]


def test_a_coarser_levels_shards_are_rounded_up_to_its_own_chunks(tmp_path):
    """Level 2 (8, 16, 16) in chunks 6 long along x: level 0's shard (16 along x) is no whole
    number of them, so level 2's shard is 18 (three chunks), a valid sharded array."""
    out = tmp_path / "o.ome.zarr"
    small = {"z": 4, "y": 8, "x": 8}
    _, got = _export(out, "2:x=6", shards={"z": 8, "y": 16, "x": 16}, chunks=small)
    level_2 = zarr.open_array(str(out / "2"))
    assert (level_2.chunks, level_2.shards) == ((4, 8, 6), (8, 16, 18))
    assert np.array_equal(got[2], _independent(_independent(_volume(), "mean"), "mean"))


def test_level_1_chunks_level_0_does_not_divide_still_make_the_same_pass_with_whole_units(
    tmp_path, monkeypatch
):
    """Level 1 in chunks of 6x12x12 (level 0's 8x16x16 do not divide 12 or 24): blocks start at
    multiples of both, so no level-1 chunk is written by two tasks, and the values are right."""
    out = tmp_path / "o.ome.zarr"
    read = built_from(monkeypatch)
    plan, got = _export(out, "1:z=6,y=12,x=12", levels=2)
    assert zarr.open_array(str(out / "1")).chunks == (6, 12, 12)
    assert "made in the same pass as level 0" in str(plan) and read == []
    for edges, step in zip(plan.edges, (24, 48, 48)):  # 2 x level 1's chunk, whole level-0 ones
        assert all(e % step == 0 for e in edges[:-1]), plan.edges
    assert np.array_equal(got[1], _independent(_volume(), "mean"))


def test_where_the_blocks_cannot_align_level_1_is_built_after_them_and_equal(tmp_path, monkeypatch):
    monkeypatch.setattr(OmeZarrWriter, "block_steps", lambda self, spec: ())
    read = built_from(monkeypatch)
    plan, got = _export(tmp_path / "o.ome.zarr", "1:z=6,y=12,x=12", levels=2)
    assert "made after the blocks" in str(plan) and read == ["0"]
    assert np.array_equal(got[1], _independent(_volume(), "mean"))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "v.npy"
    np.save(path, _volume())
    return path


def test_the_plan_lists_every_levels_chunks_in_text_and_json(source, tmp_path, capsys):
    args = ["export", str(source), "--format", "ome-zarr", "--output", str(tmp_path / "o.ome.zarr")]
    args += ["--chunks", "z=8,y=16,x=16", "--levels", "3", "--level-chunks", ASKED, "--plan"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "1: (16, 32, 32), chunks (4, 8, 8)" in text
    assert "2: (8, 16, 16), chunks (8, 16, 16)" in text
    assert cli.main([*args, "--json"]) == 0
    arrays = json.loads(capsys.readouterr().out)["arrays"]
    assert [a["chunks"] for a in arrays] == [[8, 16, 16], [4, 8, 8], [8, 16, 16]]
    assert not (tmp_path / "o.ome.zarr").exists()
    assert cli.main([*args[:-1], "--quiet"]) == 0  # the export itself: its result line
    done = capsys.readouterr()
    assert "level 1: (16, 32, 32), chunks (4, 8, 8)" in done.out + done.err


@pytest.mark.parametrize(
    "given,words",
    [
        ("x:y=8", "unknown level 'x'"),
        ("0:y=8", "level 0's chunks"),
        ("1:y=0", "whole number from 1"),
        ("1:y=-4", "cannot read level_chunks part"),
        ("1:t=4", "names axis 't'"),
        ("3:y=8", "names level 3, but the pyramid has levels 0 to 2"),
        ("1:y=8 --levels 1", "names level 1, but the pyramid has level 0 only"),
        ("1:y=8;1:x=8", "level 1 twice"),
        ("y=8", "cannot read level_chunks part"),
    ],
)
def test_bad_level_chunks_are_refused_in_one_line(source, tmp_path, capsys, given, words):
    out = tmp_path / "o.ome.zarr"
    given, _, levels = given.partition(" --levels ")
    status = cli.main(
        ["export", str(source), "--format", "ome-zarr", "--output", str(out)]
        + ["--levels", levels or "3", "--level-chunks", given, "--plan"]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("error:") == 1 and words in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_level_chunks_is_refused_for_another_format(source, tmp_path, capsys):
    status = cli.main(
        ["export", str(source), "--format", "zarr", "--output", str(tmp_path / "o.zarr")]
        + ["--level-chunks", "1:y=8", "--plan"]
    )
    err = capsys.readouterr().err
    assert status == 2 and "does not apply to format zarr" in err, err


def test_ome_zarr_py_and_ngff_zarr_read_every_level(tmp_path):
    import ngff_zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = tmp_path / "o.ome.zarr"
    _, want = _export(out, ASKED, shards=SHARDS)
    (node, *_) = Reader(parse_url(str(out)))()
    assert len(node.data) == 3
    for data, expected in zip(node.data, want):
        np.testing.assert_array_equal(np.asarray(data), expected)
    images = ngff_zarr.from_ngff_zarr(str(out)).images
    assert len(images) == 3
    for image, expected in zip(images, want):
        np.testing.assert_array_equal(np.asarray(image.data), expected)
