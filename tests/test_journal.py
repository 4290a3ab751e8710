"""One resume journal for every backend (issue 27): :class:`lazyexport.resume.Journal` is a log of
the storage layer, kept in an append-only file beside a local output and as one empty object per
finished block in an object store (an S3 server, moto, on loopback); and one pre-write check
(:func:`lazyexport.execution.job.check_outputs`) whose local/object-store differences are the
backend's capabilities."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import lazyexport as le
from helpers.objstore import key_prefix, s3_bucket
from lazyexport import remote
from lazyexport.execution.job import check_outputs
from lazyexport.plan import build_plan
from lazyexport.resume import Journal, RemoteJournal, journal_path, plan_token
from lazyexport.storage import temp_path
from lazyexport.storage.resolve import backend_of

GRID = ((2, 2), (3, 3))
BUCKET = "lzjournal"


@pytest.fixture(scope="module")
def s3():
    with s3_bucket(BUCKET) as server:
        yield server


@pytest.fixture(params=["file", "s3"])
def place(request, tmp_path) -> Path:
    """Where a journal goes: a local file, or a prefix in an S3 bucket."""
    if request.param == "file":
        return tmp_path / "j.blocks"
    request.getfixturevalue("s3")
    return remote.as_path(f"s3://{BUCKET}/{key_prefix(request.node.name)}/held/blocks")


def test_one_journal_class(s3, request):
    held = remote.as_path(
        f"s3://{BUCKET}/{key_prefix(request.node.name)}/.o.zarr.lazyexport-r1.tmp"
    )
    journal = RemoteJournal(held, GRID)  # the old name and call
    assert type(journal) is Journal and str(journal.path) == str(held / "blocks")


def test_a_block_is_listed_once_recorded_and_a_resumed_run_reads_it(place):
    journal = Journal(place, GRID)
    assert journal.load() == set()
    for block in [(0, 0), (1, 0)]:
        journal.record(block)
    again = Journal(place, GRID)  # the next run
    assert again.load() == {(0, 0), (1, 0)}
    again.record((1, 1))
    assert Journal(place, GRID).load() == {(0, 0), (1, 0), (1, 1)}


def test_another_block_grid_starts_afresh(place):
    journal = Journal(place, GRID)
    journal.load()
    journal.record((0, 0))
    assert Journal(place, ((4,), (3, 3))).load() == set()
    assert Journal(place, GRID).load() == set()  # the other grid's journal replaced this one


def test_a_removed_journal_lists_nothing(place):
    journal = Journal(place, GRID)
    journal.load()
    journal.record((0, 1))
    journal.remove()
    assert journal.backend.read_log(journal.key) == (None, ())
    assert Journal(place, GRID).load() == set()


def test_a_pickled_journal_records_in_the_same_place(place):
    journal = Journal(place, GRID)
    journal.load()
    copy = pickle.loads(pickle.dumps(journal))  # as a worker process gets it
    copy.record((1, 0))
    assert Journal(place, GRID).load() == {(1, 0)}


def test_the_local_journal_is_one_file_and_the_remote_one_an_object_per_block(place):
    journal = Journal(place, GRID)
    journal.load()
    journal.record((1, 0))
    if backend_of(place).renames:
        assert journal.files() == [place]
        assert place.read_text().splitlines()[1:] == ["1-0"]
    else:
        assert journal.files() == []
        assert journal.backend.list("blocks/") == ["blocks/1-0"]


def test_a_journal_of_the_previous_format_starts_over(tmp_path):
    old = tmp_path / "j.blocks"
    header = json.dumps({"lazyexport-journal": 1, "blocks": [list(b) for b in GRID]})
    old.write_text(f"{header}\n[0, 0]\n[1, 0]\n")
    assert Journal(old, GRID).load() == set()  # every block is written again: safe


def test_no_storage_option_is_in_a_journals_repr(s3, request):
    url = f"s3://{BUCKET}/{key_prefix(request.node.name)}/held/blocks"
    with remote.options({"session_token": "not-to-be-shown-0123"}):
        journal = Journal(remote.as_path(url), GRID)
    assert "not-to-be-shown" not in repr(journal)
    assert repr(journal) == f"Journal({url!r})"


# -- one pre-write check -------------------------------------------------------------------------


@pytest.fixture
def zarr_plan(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8))
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"))
    return build_plan(str(tmp_path / "v.npy"), settings)


def test_a_kept_local_temporary_beside_an_existing_output_is_not_taken_for_a_commit(zarr_plan):
    """Where outputs are renamed into place, a kept temporary means an unfinished run, never a
    committed one: the check must not take the existing output for its result and drop it."""
    le.run.execute(zarr_plan)
    token = plan_token(zarr_plan)
    kept = temp_path(zarr_plan.output, token)
    kept.mkdir()
    (kept / "zarr.json").write_text("{}")
    existing, finished = check_outputs(zarr_plan, token, overwrite=True, resumable=True)
    assert existing == [zarr_plan.output] and not finished
    assert (kept / "zarr.json").read_text() == "{}"  # kept for the resumed run
    with pytest.raises(le.ExportError, match="exists already"):
        check_outputs(zarr_plan, token, overwrite=False, resumable=True)
    with pytest.raises(le.ExportError, match="exists already"):
        check_outputs(zarr_plan, token, overwrite=False, resumable=False)
    assert check_outputs(zarr_plan, token, overwrite=True, resumable=True) == (
        [zarr_plan.output],
        False,
    )


def test_the_local_journal_lies_beside_the_output_and_the_remote_one_in_the_held_prefix(
    zarr_plan, s3, request
):
    token = plan_token(zarr_plan)
    assert journal_path(zarr_plan, token) == temp_path(zarr_plan.output, token, "blocks")
    url = remote.as_path(f"s3://{BUCKET}/{key_prefix(request.node.name)}/o.zarr")
    from lazyexport.storage.resolve import journal_path as located

    assert str(located(url, token)) == str(temp_path(url, token) / "blocks")
