"""One runner for every location (run.execute): what outputs in an object store keep from the
runner they had of their own. A --resume run's owner record lies in its held prefix, so the
prefix existing is not a kept run; the run is registered before its record exists; an object
store's error is blamed on the output only where the output is in one."""

import threading

import dask
import numpy as np
import pytest

import lazyexport as le
from helpers import make_data, write_zarr3
from helpers.objstore import FaultProxy, key_prefix, s3_bucket
from lazyexport import remote
from lazyexport.settings import ExportSettings
from lazyexport.storage import Busy, owners

BUCKET = "runner"


@pytest.fixture(scope="module")
def s3():
    with s3_bucket(BUCKET) as server:
        yield server


@pytest.fixture
def prefix(request) -> str:
    return key_prefix(request.node.name)


def _zarr(url: str) -> ExportSettings:
    return ExportSettings(format="zarr", output=url, chunks={"z": 1})


def _ours(s3, prefix: str) -> list[str]:
    return [k for k in s3.keys(BUCKET, prefix) if "lazyexport-" in k]


def test_resume_refuses_an_existing_output_without_overwrite(s3, prefix):
    data = make_data("uint16", (4, 16, 16))
    url = f"s3://{BUCKET}/{prefix}/o.zarr"
    le.export(np.zeros_like(data), _zarr(url))
    with pytest.raises(le.ExportError, match="exists already"):
        le.export(data, _zarr(url), resume=True)
    np.testing.assert_array_equal(le.open_source(url).values, 0)


@pytest.mark.parametrize("compute", [True, False])
def test_resume_with_overwrite_replaces_an_existing_output(s3, prefix, compute):
    data = make_data("uint16", (4, 16, 16))
    url = f"s3://{BUCKET}/{prefix}/o.zarr"
    le.export(np.zeros_like(data), _zarr(url))
    done = le.export(data, _zarr(url), resume=True, overwrite=True, compute=compute)
    if not compute:
        dask.compute(done, scheduler="threads")
    np.testing.assert_array_equal(le.open_source(url).values, data)
    assert not _ours(s3, prefix)


def test_resume_refuses_someone_s_objects_and_never_deletes_them(s3, prefix):
    data = make_data("uint16", (4, 16, 16))
    notes = f"{prefix}/o.zarr/notes.txt"
    s3.client().put_object(Bucket=BUCKET, Key=notes, Body=b"mine")
    url = f"s3://{BUCKET}/{prefix}/o.zarr"
    with pytest.raises(le.ExportError, match="holds objects but no Zarr metadata"):
        le.export(data, _zarr(url), resume=True)
    assert s3.keys(BUCKET, prefix) == [notes]


def test_the_run_is_registered_before_its_owner_record_exists(s3, prefix, monkeypatch):
    """A second claim right after the first returns (another thread of this process exporting
    the same plan) finds the owner alive: it is refused, never takes the claim over."""
    real = owners.claim_key
    outcome: list[str] = []

    def claim_then_race(backend, key, token):
        real(backend, key, token)
        if outcome:
            return

        def other():
            try:
                real(backend, key, token)
                outcome.append("took over")
            except Busy:
                outcome.append("busy")

        racer = threading.Thread(target=other)
        racer.start()
        racer.join()

    monkeypatch.setattr(owners, "claim_key", claim_then_race)
    data = make_data("uint16", (4, 16, 16))
    le.export(data, _zarr(f"s3://{BUCKET}/{prefix}/o.zarr"), resume=True)
    assert outcome == ["busy"]


def test_a_finished_commit_also_ends_the_lazy_export_of_the_plan(s3, prefix, tmp_path):
    """A --resume run that finds its interrupted run committed in place (the output published,
    the held prefix left) removes what is left, the compute=False mark of the plan too."""
    data = make_data("uint16", (4, 16, 16))
    src = str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 16, 16)).file)
    url = f"s3://{BUCKET}/{prefix}/o.zarr"
    le.export(src, _zarr(url), compute=False, resume=True)  # its mark names the plan's token
    (mark,) = [k for k in s3.keys(BUCKET, prefix) if k.endswith(".lazy")]
    held = mark[: -len(".lazy")] + ".tmp"
    le.export(src, _zarr(f"s3://{BUCKET}/{prefix}/other/o.zarr"))
    client = s3.client()
    for key in s3.keys(BUCKET, f"{prefix}/other/o.zarr/"):  # the output, as if committed
        client.copy_object(
            Bucket=BUCKET,
            Key=key.replace("/other/", "/"),
            CopySource={"Bucket": BUCKET, "Key": key},
        )
    client.put_object(Bucket=BUCKET, Key=f"{held}/blocks/0-0-0", Body=b"")  # its journal
    le.export(src, _zarr(url), resume=True)
    assert not _ours(s3, f"{prefix}/o.zarr") and not _ours(s3, f"{prefix}/.o.zarr")
    np.testing.assert_array_equal(le.open_source(url).values, data)


def test_a_url_source_s_error_is_not_blamed_on_a_local_output(s3, prefix, tmp_path):
    data = make_data("uint16", (4, 16, 16))
    src = write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 16, 16)).file
    s3.upload_tree(src, BUCKET, f"{prefix}/src.zarr")
    proxy = FaultProxy(s3.endpoint, fail=0)
    options = {"endpoint": proxy.endpoint, "max_retries": "0", "retry_timeout": "1"}
    with remote.options(options):
        source = le.open_source(f"s3://{BUCKET}/{prefix}/src.zarr")
    proxy.stop()
    out = tmp_path / "out.zarr"
    with pytest.raises(Exception) as info:
        le.export(
            source.data, ExportSettings(format="zarr", output=str(out)), storage_options=options
        )
    assert f"cannot write {out}" not in str(info.value)
    assert not out.exists()
