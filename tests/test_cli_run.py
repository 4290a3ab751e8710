"""The command line as a user runs it (issue 13 items 21, 23 and 25): the resume note is printed
once, before the export runs; a signal during start-up (even one Python ignored) ends the command
as interrupted, and the console script and ``python -m`` still run; "exists" messages name the
dataset and an unknown axis of ``axis_order`` is named, in Python and on the command line. Each
test names its item and failed before the fix it guards.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import lazyexport as le
from helpers import ROOT, cli_env, make_data, run_cli, write_hdf5
from lazyexport.errors import AxisError, OutputExistsError
from lazyexport.formats import formats


def test_item21_resume_note_printed_before_the_export_runs(tmp_path, monkeypatch, capsys):
    from lazyexport import cli, run

    src = write_hdf5(tmp_path / "raw.h5", make_data("uint8"), dataset="data")
    seen_before = []
    real_execute = run.execute  # what every front end's export runs each plan with

    def execute(plan, **options):
        seen_before.append(capsys.readouterr().err)  # what the user has read when the export starts
        return real_execute(plan, **options)

    monkeypatch.setattr(run, "execute", execute)
    code = cli.main(["export", src.spec, "--output", str(tmp_path / "out.h5"), "--resume", "-q"])
    assert code == 0
    assert len(seen_before) == 1
    assert "note: hdf5 outputs cannot resume; exported from the start" in seen_before[0]


def test_item21_resume_note_in_cli_output_once(tmp_path):
    src = write_hdf5(tmp_path / "raw.h5", make_data("uint8"), dataset="data")
    proc = run_cli(
        "export", src.spec, "--format", "npy", "--output", tmp_path / "out.npy", "--resume", "-q"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("npy outputs cannot resume; exported from the start") == 1, proc.stderr


def _script_entry() -> str:
    """The console script's ``module:function``, as pyproject.toml declares it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return project["project"]["scripts"]["lazyexport"]


STARTED = "-- interpreter started --"


def _commands(out: Path) -> dict[str, list[str]]:
    """The two ways to start the command, each printing STARTED to stderr first: once the
    interpreter has started, before anything of lazyexport is imported (no program can handle
    a signal before its interpreter has started; on a busy machine that can take a while)."""
    module, _, function = _script_entry().partition(":")
    args = ["demo", "--output-dir", str(out), "--quiet"]  # runs for seconds after start-up
    started = f"import sys; sys.stderr.write({STARTED + chr(10)!r}); sys.stderr.flush()"
    script = f"{started}; from {module} import {function}; sys.exit({function}())"
    as_module = (
        f"{started}; import runpy; "
        f"runpy.run_module('lazyexport', run_name='__main__', alter_sys=True)"
    )
    return {
        "python -m lazyexport": [sys.executable, "-c", as_module, *args],
        "console script": [sys.executable, "-c", script, *args],
    }


def _signal_early(command: list[str], signum: int, delay: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        command,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None  # a pipe
    first = proc.stderr.readline()
    time.sleep(delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert first == STARTED + "\n", first + err
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.mark.parametrize(
    "signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_item23_signal_during_start_up_exits_cleanly(tmp_path, signum, code):
    # seconds after the interpreter started; importing everything takes over a second, during
    # which the signal used to kill silently (SIGTERM) or print a traceback (SIGINT)
    delays = (0.1, 0.2, 0.35, 0.6, 0.8, 1.0)
    jobs = [
        (name, command, delay)
        for delay in delays
        for name, command in _commands(tmp_path / f"demo-{delay}").items()
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda job: (job, _signal_early(job[1], signum, job[2])), jobs))
    for (name, _, delay), proc in runs:
        where = f"{name}, {signal.Signals(signum).name} after {delay} s"
        assert proc.returncode == code, (where, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (where, proc.stderr[-2000:])
        assert proc.stderr.strip().splitlines()[-1].startswith("error: "), (
            where,
            proc.stderr[-2000:],
        )


def test_item23_console_script_and_module_still_run(tmp_path):
    commands = [[sys.executable, "-m", "lazyexport"], _commands(tmp_path)["console script"][:3]]
    for command in commands:
        proc = subprocess.run(
            [*command, "formats"], env=cli_env(), capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert all(name in proc.stdout for name in formats())
    assert le.preview.__name__ == "preview" and callable(le.describe)  # the API, not the submodules


@pytest.mark.parametrize(
    "output,named",
    [
        ("out.h5", "out.h5/exported_data"),
        ("out.h5/group/data", "out.h5/group/data"),
        ("store.zarr/inner", "store.zarr/inner"),
    ],
)
def test_item25_exists_message_names_the_dataset(tmp_path, output, named):
    fmt = "zarr" if ".zarr" in output else "hdf5"
    settings = le.ExportSettings(format=fmt, output=str(tmp_path / output))
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    le.export(data, settings)
    with pytest.raises(OutputExistsError) as info:
        le.export(data, settings)
    assert f"{tmp_path / named} exists already" in str(info.value)


def test_item25_exists_message_on_the_command_line(tmp_path):
    src = write_hdf5(tmp_path / "raw.h5", make_data("uint8"), dataset="data")
    first = run_cli("export", src.spec, "--output", tmp_path / "out.h5", "-q")
    assert first.returncode == 0, first.stderr
    again = run_cli("export", src.spec, "--output", tmp_path / "out.h5", "-q")
    assert again.returncode == 2
    assert f"error: {tmp_path}/out.h5/exported_data exists already" in again.stderr


def test_item25_axis_order_with_an_unknown_axis_names_it(tmp_path):
    data = np.zeros((4, 5, 6), dtype=np.uint8)
    settings = le.ExportSettings(axis_order="qyx", format="npy", output=str(tmp_path / "o.npy"))
    with pytest.raises(AxisError) as info:
        le.export(le.open_source(data, axes="zyx"), settings)
    message = str(info.value)
    assert "'q'" in message and "zyx" in message, message
    assert message.index("'q'") < message.index("'z'"), message  # the unknown axis comes first


def test_item25_axis_order_unknown_axis_on_the_command_line(tmp_path):
    src = write_hdf5(tmp_path / "raw.h5", make_data("uint8"), dataset="data")
    proc = run_cli("export", src.spec, "--axis-order", "qyx", "--output", tmp_path / "o.h5")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert "unknown axis 'q'" in line, line


def test_item23_a_signal_python_ignored_still_ends_the_command_as_interrupted(
    tmp_path, capsys, monkeypatch
):
    """Python ignores a KeyboardInterrupt raised while it runs a ``__del__`` or weakref callback
    ("Exception ignored in ..."); a Ctrl-C landing there once let an export run on and exit 0,
    and printed a traceback. The handler records the signal, Python's report of it is kept quiet,
    and the command stops at its next check with status 130 and one error: line."""
    from lazyexport import cli, interrupt, run

    volume = tmp_path / "v.npy"
    np.save(volume, np.arange(8 * 64 * 64, dtype="uint16").reshape(8, 64, 64))

    class Dropped:
        def __del__(self):
            interrupt.raise_interrupt(
                signal.SIGINT, None
            )  # as the handler does when Ctrl-C lands here

    original = run._Tracker.check
    calls: list[int] = []

    def check(self):
        if not calls:
            Dropped()  # the KeyboardInterrupt is ignored...
        calls.append(1)
        original(self)  # ...but the next check raises it

    monkeypatch.setattr(run._Tracker, "check", check)
    # what Python would print as "Exception ignored in ... Traceback ..."
    printed: list[sys.UnraisableHookArgs] = []
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    status = cli.main(
        ["export", str(volume), "--format", "zarr", "--output", str(tmp_path / "o"), "--quiet"]
    )
    assert status == 130
    assert printed == []  # the one error: line is the whole report
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: interrupted; temporary output removed"
    ]
    assert sys.unraisablehook == printed.append  # the command put the hook back
    assert not (tmp_path / "o.zarr").exists() and calls
    interrupt.check()  # nothing left pending
