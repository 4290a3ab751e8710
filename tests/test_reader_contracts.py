"""The promises every source reader keeps, one suite generated from the reader registry: a reader
registered in :mod:`lazyexport.sources` (a plugin's too, through the ``lazyexport.readers`` entry
point group, see the last test) gets every row without this file being edited, and fails the
suite until tests/helpers/reader_samples.py has a sample maker for it.

Per reader: ``open_source`` chooses it for its sample and the values equal numpy, for several
dtypes (a big-endian one where the format stores it); a cutout that starts and stops inside read
units reads only the units it overlaps, each once (counted at the reader the block tasks read
through; a source without one is read through dask, one block per read unit, so culling keeps
only those); at an S3 and an HTTP URL it reads the same values, or a reader without URL support
refuses in one line. bioio is an optional extra: without its CZI plugin the bioio rows say so in
a warning and the skip reason, they are not passed silently.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import pytest

import lazyexport as le
from helpers import ROOT
from helpers.objstore import key_prefix, s3_bucket, serve_directory
from helpers.reader_samples import SAMPLES, Sample, installed, maker, sample_data
from lazyexport.errors import SourceError
from lazyexport.plan import build_plan, cutout_reads
from lazyexport.plan_steps import unit_extremes
from lazyexport.settings import ExportSettings
from lazyexport.sources import SourceReader, get_reader, readers, source_facts

NAMES = [r.name for r in readers()]
CASES = [(n, d) for n in NAMES for d in (SAMPLES[n].dtypes if n in SAMPLES else ("uint16",))]
ROI = {"z": (1, 5), "y": (3, 21), "x": (17, 30)}  # starts and stops inside read units


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lzr") as server:
        yield server


def _needs(name: str) -> None:
    """Skip, visibly, a row whose sample cannot be written here (an optional extra missing)."""
    needs = maker(name).needs
    if not installed(needs):
        why = f"reader {name!r} NOT TESTED: {needs} is not installed (lazyexport[microscopy])"
        warnings.warn(why, stacklevel=2)
        pytest.skip(why)


def _zyx(arr) -> np.ndarray:
    """The values in z, y, x order, without the length-1 axes a reader adds (bioio's t, c)."""
    extra = [d for d in arr.dims if d not in "zyx"]
    assert all(arr.sizes[d] == 1 for d in extra), arr.sizes
    return arr.squeeze(extra).transpose("z", "y", "x").values


def _spy_open(monkeypatch, name: str) -> list[str]:
    """Record which reader's ``open`` is called."""
    cls = type(get_reader(name))
    opened: list[str] = []
    original = cls.open

    def spy(self, *args, **kwargs):
        opened.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "open", spy)
    return opened


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_reader_has_a_sample_maker(name):
    maker(name)
    assert isinstance(get_reader(name), SourceReader)


def test_a_reader_without_a_sample_maker_fails_the_suite():
    with pytest.raises(AssertionError, match="has no sample maker: add one"):
        maker("made-up")


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_values_equal_numpy(tmp_path, monkeypatch, name, dtype):
    _needs(name)
    data = sample_data(dtype)
    sample = maker(name).write(tmp_path, data)
    opened = _spy_open(monkeypatch, name)
    arr = le.open_source(sample.text)
    assert opened == [name]  # the registry chose this reader
    got = _zyx(arr)
    assert (got.dtype.kind, got.dtype.itemsize) == (data.dtype.kind, data.dtype.itemsize)
    np.testing.assert_array_equal(got, data)
    assert source_facts(arr).identity_paths  # the files whose change a --resume notices


def _units(box: dict[str, tuple[int, int]], unit: dict[str, int], dims) -> set[tuple]:
    """The read units (index per axis) that ``box`` overlaps."""
    ranges = [range(box[d][0] // unit[d], math.ceil(box[d][1] / unit[d])) for d in dims]
    return set(itertools.product(*ranges))


def _count_reads(monkeypatch, reader) -> list[tuple]:
    """Record the regions asked of ``reader`` (the object block tasks read through)."""
    reads: list[tuple] = []
    cls = type(reader)
    original = cls.__getitem__

    def counted(self, key):
        if self is reader:
            reads.append(key)
        return original(self, key)

    monkeypatch.setattr(cls, "__getitem__", counted)
    into = getattr(cls, "read_into", None)  # (a region decoded straight into a block)
    if into is not None:

        def counted_into(self, out, key):
            if self is reader:
                reads.append(key)
            return into(self, out, key)

        monkeypatch.setattr(cls, "read_into", counted_into)
    return reads


@pytest.mark.parametrize("name", NAMES)
def test_a_cutout_decodes_only_the_units_it_overlaps(tmp_path, monkeypatch, name):
    """Every stored unit the cutout does not overlap is overwritten with bytes that cannot be
    decoded (where the sample maker can find them) after opening: the export of the cutout and
    the planner's pass over it (min/max, percentiles) still read the right values. The reader is
    asked for the cutout's region only."""
    _needs(name)
    made = maker(name)
    data = sample_data(made.dtypes[-1])
    sample = made.write(tmp_path, data)
    src = le.open_source(sample.text)  # metadata only: before the units are spoiled
    facts = source_facts(src)
    dims = cast("tuple[str, ...]", src.dims)  # xarray types them as any hashable
    units = dict(facts.chunks or dict.fromkeys(dims, 1))  # none: any region as it is
    assert set(units) == set(dims), f"{name} declares no read unit for an axis: {units}"
    assert [units[d] for d in "zyx"] != [src.sizes[d] for d in "zyx"]  # several units
    if facts.reader is None:  # read through dask: each block at most one read unit
        for d, sizes in zip(dims, src.data.chunks):
            assert max(sizes) <= units[d], (name, d, sizes)
    if made.poison is not None:
        made.poison(sample, _units(ROI, units, "zyx"), units)
    reads = _count_reads(monkeypatch, facts.reader) if facts.reader is not None else []
    roi = {d: ROI.get(d, (0, n)) for d, n in zip(dims, src.shape)}
    output = tmp_path / "cut.npy"
    le.export(src, ExportSettings(roi=ROI, output=str(output), format="npy", axis_order="zyx"))
    want = data[tuple(slice(*ROI[d]) for d in "zyx")]
    np.testing.assert_array_equal(np.load(output), want)
    if facts.reader is not None:
        boxes = [{d: (k.start or 0, k.stop) for d, k in zip(dims, key)} for key in reads]
        assert all(roi[d][0] <= b[d][0] and b[d][1] <= roi[d][1] for b in boxes for d in b)
        assert sum(math.prod(b - a for a, b in box.values()) for box in boxes) == want.size
    if facts.chunks is not None:  # the planner's pass over the data reads by units
        passed = cutout_reads(src, roi).compute(scheduler="sync")
        np.testing.assert_array_equal(
            _zyx(src[tuple(slice(*roi[d]) for d in dims)].copy(data=np.asarray(passed))), want
        )
    if facts.reader is not None and facts.chunks is not None:  # renormalize's min/max pass
        assert unit_extremes(src, roi) == (want.min(), want.max())


# (a slice sequence is read through dask, its files joined: a file corrupted after the sequence
# was opened is reported as its TIFF library says, in this pass as in the block tasks)
POISONABLE = [
    n
    for n in NAMES
    if installed(maker(n).needs) and maker(n).poison is not None and n != "slice-sequence"
]


@pytest.mark.parametrize("name", POISONABLE)
def test_a_corrupt_unit_in_the_cutout_is_one_line_in_the_min_max_pass(tmp_path, name):
    """Renormalize's passes over a corrupt read unit inside the cutout (min/max, percentiles)
    say so in one line naming the file (SourceError), as the export's block tasks do: no error
    of the file's library."""
    made = maker(name)
    sample = made.write(tmp_path, sample_data(made.dtypes[-1]))
    src = le.open_source(sample.text)
    dims = cast("tuple[str, ...]", src.dims)
    units = dict(source_facts(src).chunks or {})
    everything = _units({d: (0, n) for d, n in zip(dims, src.shape)}, units, "zyx")
    spoiled = min(_units(ROI, units, "zyx"))
    assert made.poison is not None
    made.poison(sample, everything - {spoiled}, units)
    for asked in (None, ("p1", "p99")):  # the min/max pass, and the percentiles' through dask
        renormalized = ExportSettings(roi=ROI, renormalize=(asked, (0, 255)), dtype="uint8")
        with pytest.raises(SourceError) as info:
            build_plan(src, renormalized)
        message = str(info.value)
        assert str(sample.upload) in message and "\n" not in message, message


@pytest.mark.parametrize("name", NAMES)
def test_at_a_url_the_values_equal_numpy_or_it_is_refused_in_one_line(s3, tmp_path, name, request):
    reader = get_reader(name)
    data = sample_data("uint16")
    if installed(maker(name).needs):
        sample = maker(name).write(tmp_path, data)
    else:  # refused before anything is read: any file of the reader's suffix will do
        assert not reader.supports_urls
        (tmp_path / "in.czi").write_bytes(b"")
        sample = Sample(str(tmp_path / "in.czi"), tmp_path / "in.czi")
    prefix = key_prefix(request.node.name)
    relative = sample.upload.relative_to(tmp_path).as_posix()
    s3.upload_tree(sample.upload, "lzr", f"{prefix}/{relative}")
    with serve_directory(tmp_path) as base:
        urls = [f"s3://lzr/{prefix}/{relative}{sample.inner}", f"{base}/{relative}{sample.inner}"]
        for url in urls:
            if reader.supports_urls:
                np.testing.assert_array_equal(_zyx(le.open_source(url)), data)
                continue
            with pytest.raises(SourceError) as info:
                le.open_source(url)
            message = str(info.value)
            assert "\n" not in message and "read from local files only" in message, message


PLUGIN = """
import numpy as np
from lazyexport.sources import SourceReader
from lazyexport.sources.base import labeled
import dask.array as da

class ToyReader(SourceReader):
    name = "toy"
    description = "toy"
    suffixes = (".toy",)

    def open(self, path, internal, axes=None, scene=None):
        values = np.frombuffer(path.read_bytes(), np.uint8).reshape(4, -1)
        return labeled(da.from_array(values), axes or "yx", path)
"""


def _installed_plugin(where: Path, name: str, entry: str) -> None:
    """A distribution in ``where`` that declares ``entry`` in the ``lazyexport.readers`` group."""
    info = where / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[lazyexport.readers]\n{entry}\n")


def _python(where: Path, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a new Python that finds the distributions in ``where``."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{where}:{ROOT}", "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_a_reader_plugin_is_found_through_its_entry_point(tmp_path):
    """A package that declares a reader in the ``lazyexport.readers`` group is used without
    lazyexport being edited (and would get this suite's rows, once it has a sample maker)."""
    (tmp_path / "toy_reader.py").write_text(PLUGIN)
    _installed_plugin(tmp_path, "toy_reader", "toy = toy_reader:ToyReader")
    (tmp_path / "a.toy").write_bytes(bytes(range(32)))
    done = _python(
        tmp_path,
        f"""
        import lazyexport as le
        from lazyexport.sources import readers
        assert "toy" in [r.name for r in readers()]
        print(int(le.open_source({str(tmp_path / "a.toy")!r}).values.sum()))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sum(range(32)))


def test_a_broken_reader_plugin_leaves_the_others_working(tmp_path):
    _installed_plugin(tmp_path, "broken_reader", "bad = no_such_module:Reader")
    np.save(tmp_path / "a.npy", np.arange(6))
    done = _python(
        tmp_path,
        f"""
        import lazyexport as le
        print(int(le.open_source({str(tmp_path / "a.npy")!r}).values.sum()))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "15"
    assert "the reader plugin 'bad' was not loaded" in done.stderr
