"""``lazyexport clean URL`` cleans beside the output in its object store (issue #26 item 20).

Before the fix the URL became the local path ``s3:/bkt/...``: ``clean s3://bkt/o.zarr`` said
"s3:/bkt/o.zarr does not exist", and with a local directory named ``s3:`` it cleaned that.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_command, cli_env
from helpers.objstore import s3_bucket
from lazyexport.storage import host_tag

BUCKET = "lzclean"


@pytest.fixture(scope="module")
def s3():
    with s3_bucket(BUCKET) as server:
        yield server


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def _clean(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command("clean", *args),
        cwd=cwd,
        env={**cli_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_clean_of_a_url_removes_what_a_killed_export_left_in_the_store(s3, tmp_path):
    leftover = f"run/.o.zarr.lazyexport-t0123abcdp{_dead_pid()}h{host_tag()}.tmp"
    client = s3.client()
    for key in (f"{leftover}/zarr.json", f"{leftover}/c/0", "run/keep.txt"):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    # a local directory named like the URL's first part must not be what is cleaned
    local = tmp_path / "s3:" / BUCKET / "run"
    local.mkdir(parents=True)
    (local / leftover.rpartition("/")[2]).write_text("local, not the store's")
    url = f"s3://{BUCKET}/run/o.zarr"

    listed = _clean(url, "--dry-run", cwd=tmp_path, env=s3.env)
    assert listed.returncode == 0, listed.stderr
    assert f"would remove s3://{BUCKET}/{leftover} (a temporary output)" in listed.stdout
    assert "s3:/" + BUCKET not in listed.stdout.replace("s3://", "")
    assert len(s3.keys(BUCKET, "run/")) == 3

    done = _clean(url, cwd=tmp_path, env=s3.env)
    assert done.returncode == 0, done.stderr
    assert f"removed s3://{BUCKET}/{leftover}" in done.stdout
    assert s3.keys(BUCKET, "run/") == ["run/keep.txt"]
    assert (local / leftover.rpartition("/")[2]).exists()  # the local directory untouched

    again = _clean(url, cwd=tmp_path, env=s3.env)
    assert again.returncode == 0 and again.stdout.strip() == "nothing to clean"


def test_clean_of_a_url_that_cannot_be_listed_is_one_line_naming_it(s3, tmp_path):
    done = _clean(f"s3://no-such-{BUCKET}/o.zarr", cwd=tmp_path, env=s3.env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: cannot clean beside s3://no-such-{BUCKET}/o.zarr: ")
    assert "does not exist" not in done.stderr
    assert not (tmp_path / "s3:").exists()


@pytest.mark.parametrize(
    "url, line",
    [
        ("http://127.0.0.1:1/o.zarr", "is read-only (HTTP)"),
        ("s4://bkt/o.zarr", "unknown URL scheme s4://"),
    ],
)
def test_clean_refuses_what_it_cannot_clean_in_one_line(tmp_path, url, line):
    done = _clean(url, cwd=tmp_path, env={})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert line in done.stderr
