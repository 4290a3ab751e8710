"""No secret is printed, planned or saved (issue #26 item 14): neither a storage option's value
(however the option is misspelled) nor the user-info of a URL (``user:password@``), in error
lines, plans (text and JSON), project files written by ``--save-settings``, results (``str`` and
``repr``) and whatever else the command prints. Each surface is checked by searching it for the
secret itself."""

from __future__ import annotations

import io
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

import lazyexport as le
from helpers import cli_command, cli_env
from helpers.objstore import S3Server, environment
from lazyexport import remote
from lazyexport.errors import ExportError, redact

SECRET = "SeCrEt-do-not-show-4711"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    np.save(tmp_path / "v.npy", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8))
    return tmp_path


@pytest.fixture
def offline() -> dict[str, str]:
    """S3 at a loopback port nobody listens on: no request leaves the machine."""
    return {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        "AWS_ALLOW_HTTP": "true",
    }


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None):
    import subprocess

    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env={**cli_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


@pytest.mark.parametrize(
    "option",
    [
        f"secret_access_key:{SECRET}",  # a colon for '='
        f"secret_access_key {SECRET}",
        SECRET,
        f"={SECRET}",
    ],
)
def test_a_malformed_storage_option_is_refused_without_its_value(work, option):
    line = _one_error_line(_run("export", "v.npy", "--storage-option", option, cwd=work))
    assert SECRET not in line
    assert "key=value" in line


def test_a_misspelled_option_names_its_key():
    with pytest.raises(ExportError, match="write secret_access_key=VALUE") as caught:
        remote.parse_option(f"secret_access_key:{SECRET}")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "option",
    ["timeout", "connect_timeout", "allow_http", "skip_signature", "virtual_hosted_style_request"],
)
def test_an_unusable_option_value_is_not_echoed(work, offline, option):
    done = _run(
        "export",
        "v.npy",
        "--output",
        "s3://bkt/o.zarr",
        "--storage-option",
        f"{option}={SECRET}",
        cwd=work,
        env=offline,
    )
    line = _one_error_line(done)
    assert SECRET not in line
    assert option in line  # which option it was


def test_an_unknown_option_key_is_named_and_its_value_not_shown(work, offline):
    done = _run(
        "export",
        "v.npy",
        "--output",
        "s3://bkt/o.zarr",
        "--storage-option",
        f"bogus_key={SECRET}",
        cwd=work,
        env=offline,
    )
    line = _one_error_line(done)
    assert SECRET not in line and "bogus_key" in line


@pytest.mark.parametrize(
    "args",
    [
        ["info", f"s3://user:{SECRET}@bkt/x.zarr"],
        ["info", f"https://user:{SECRET}@127.0.0.1:{{port}}/x.zarr"],
        ["export", f"s3://user:{SECRET}@bkt/x.zarr", "--output", "o.h5"],
        ["export", "v.npy", "--output", f"s4://user:{SECRET}@bkt/o.h5"],
        ["export", "v.npy", "--output", f"s3://user:{SECRET}@bkt/o.zarr"],
    ],
)
def test_a_url_with_user_info_is_shown_without_it_in_error_lines(work, offline, args):
    port = offline["AWS_ENDPOINT_URL"].rpartition(":")[2]
    args = [a.replace("{port}", port) for a in args]
    done = _run(*args, "--storage-option", "max_retries=0", cwd=work, env=offline)
    line = _one_error_line(done)
    assert SECRET not in line
    assert "***@" in line


def test_plans_and_saved_project_files_hold_no_user_info(work, offline):
    output = f"s3://user:{SECRET}@bkt/o.zarr"
    text = _run("export", "v.npy", "--output", output, "--plan", cwd=work, env=offline)
    as_json = _run("export", "v.npy", "--output", output, "--plan", "--json", cwd=work, env=offline)
    saved = _run(
        *("export", "v.npy", "--output", output, "--plan", "--save-settings", "p.toml"),
        cwd=work,
        env=offline,
    )
    for done in (text, as_json, saved):
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
    assert "s3://***@bkt/o.zarr" in text.stdout and "s3://***@bkt/o.zarr" in as_json.stdout
    project = (work / "p.toml").read_text()
    assert SECRET not in project and "s3://***@bkt/o.zarr" in project

    plan = le.plan(str(work / "v.npy"), le.ExportSettings(format="zarr", output=output))
    assert SECRET not in str(plan) and SECRET not in repr(plan.summary())


def test_an_export_to_a_url_with_user_info_shows_none_of_it(work):
    server = S3Server()
    try:
        with environment(server.env):
            server.bucket("lzs")
            output = f"s3://user:{SECRET}@lzs/o.zarr"
            done = _run("export", "v.npy", "--output", output, cwd=work, env=server.env)
            assert SECRET not in done.stdout + done.stderr
            if done.returncode == 0:  # the client ignores S3 user-info; the export ran
                assert "s3://***@lzs/o.zarr" in done.stdout
            else:
                _one_error_line(done)
            result = le.export(
                str(work / "v.npy"), le.ExportSettings(format="zarr", output=output), overwrite=True
            )
            assert SECRET not in str(result) and SECRET not in repr(result)
            assert "***@" in repr(result)
    finally:
        server.stop()


def test_the_command_prints_nothing_with_user_info(monkeypatch):
    """Whatever part of lazyexport prints (progress bars, notes, tracebacks with --debug), the
    command's streams redact it."""
    from lazyexport import cli

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)

    def prints(args) -> int:
        print(f"progress of s3://user:{SECRET}@bkt/o.zarr")
        return 0

    monkeypatch.setattr(cli, "cmd_formats", prints)
    monkeypatch.setattr(cli, "make_parser", lambda: _parser_with(prints), raising=True)
    assert cli.main(["formats"]) == 0
    assert SECRET not in out.getvalue() and "s3://***@bkt/o.zarr" in out.getvalue()
    assert sys.stdout is out  # put back


def _parser_with(func):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("formats").set_defaults(func=func)
    return parser


@pytest.mark.parametrize(
    "text, shown",
    [
        (f"s3://user:{SECRET}@bkt/x", "s3://***@bkt/x"),
        (f"'https://{SECRET}@host:8/a@b'", "'https://***@host:8/a@b'"),
        (f"https://u:p@ss{SECRET}@host/x", "https://***@host/x"),
        ("gs://bkt/a@b", "gs://bkt/a@b"),  # an '@' in the key is not user-info
        ("http://host/x?a=b@c", "http://host/x?a=b@c"),
        ("abfss://container@account.dfs.core.windows.net/x", None),  # a container, no secret
        (f"abfss://container:{SECRET}@account/x", "abfss://***@account/x"),
    ],
)
def test_redact(text, shown):
    assert redact(text) == (text if shown is None else shown)
    assert str(ExportError(f"cannot read {text}")) == f"cannot read {redact(text)}"


def test_no_secret_in_an_environment_variable_leaks_either(work):
    """The client's environment (AWS_SECRET_ACCESS_KEY) is never printed by an error."""
    env = {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        "AWS_ALLOW_HTTP": "true",
    }
    done = _run("info", "s3://bkt/x.zarr", "--storage-option", "max_retries=0", cwd=work, env=env)
    _one_error_line(done)
    assert SECRET not in done.stderr + done.stdout
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != SECRET
