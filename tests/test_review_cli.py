"""Issue 13, items 21, 22, 23 and 25: what a new user of the command line saw.

Each test names its item; each failed before the fix it guards.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers import ROOT, cli_env, make_data, run_cli, write_hdf5
from lazyexport.errors import AxisError, OutputExistsError
from lazyexport.formats import formats


def renormalized(data: np.ndarray, lo: float, hi: float, out=(0, 255), dtype="uint8") -> np.ndarray:
    """The documented renormalization (float32 for inputs up to 16 bits), then rounding and
    clipping."""
    f = np.float32
    y = (data.astype(f) - f(lo)) * f(out[1] - out[0]) / f(hi - lo) + f(out[0])
    info = np.iinfo(dtype)
    return np.clip(np.rint(y), info.min, info.max).astype(dtype)


# --- item 21: the "exported from the start" note of --resume appears before the export --------


def test_item21_resume_note_printed_before_the_export_runs(tmp_path, monkeypatch, capsys):
    from lazyexport import cli

    src = write_hdf5(tmp_path / "raw.h5", make_data("uint8"), dataset="data")
    seen_before = []
    real_execute = cli.execute

    def execute(plan, **options):
        seen_before.append(capsys.readouterr().err)  # what the user has read when the export starts
        return real_execute(plan, **options)

    monkeypatch.setattr(cli, "execute", execute)
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


# --- item 22: an input range left out is the data's range (inside the ROI), for integers too ---


def test_item22_api_integer_input_range_is_the_data_range_inside_the_roi(tmp_path):
    rng = np.random.default_rng(22)
    data = rng.integers(1000, 3000, size=(6, 10, 12), dtype=np.uint16)
    data[0] = 0  # outside the ROI: must not widen the range
    data[-1] = 65535
    settings = le.ExportSettings(
        roi={"z": (1, 5)},
        renormalize=(None, (0, 255)),
        dtype="uint8",
        format="npy",
        output=str(tmp_path / "out.npy"),
    )
    result = le.export(le.open_source(data, axes="zyx"), settings)
    inside = data[1:5]
    lo, hi = int(inside.min()), int(inside.max())
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), renormalized(inside, lo, hi))
    assert any(f"[{lo}, {hi}]" in note and "data" in note for note in result.notes), result.notes


def test_item22_cli_renormalize_without_input_range_on_integers(tmp_path):
    data = (make_data("uint8") // 4 + 50).astype(np.uint8)  # values 50..113
    src = write_hdf5(tmp_path / "raw.h5", data, dataset="data")
    proc = run_cli(
        "export",
        src.spec,
        "--renormalize",
        ":0,255",
        "--dtype",
        "uint8",
        "--output",
        tmp_path / "out.h5",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert "renormalize input range taken from the data inside the ROI: [50, 113]" in proc.stderr
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["exported_data"][...], renormalized(data, 50, 113))


def test_item22_batch_empty_input_range_is_the_data_range(tmp_path):
    data = np.arange(-40, 60, dtype=np.int16).reshape(4, 5, 5)
    np.save(tmp_path / "vol.npy", data)
    batch = le.Batch.from_dict(
        {
            "settings": {
                "format": "zarr",
                "output": "{dataset_dir}/{nickname}.zarr",
                "dtype": "uint8",
                "renormalize": [[], [0, 255]],
            },
            "datasets": [{"source": "vol.npy"}],
        },
        base_dir=tmp_path,
    )
    report = batch.export_all()
    assert report.ok, report.summary()
    written = zarr.open_array(str(tmp_path / "vol.zarr"))[...]
    np.testing.assert_array_equal(written, renormalized(data, -40, 59))


def test_item22_docs_say_the_data_range():
    readme = (ROOT / "README.md").read_text()
    assert "dtype's range for integers" not in readme
    assert le.ExportSettings.__doc__ is not None
    assert "the dtype's range" not in le.ExportSettings.__doc__
    for text in (
        readme,
        (ROOT / "docs" / "batch.md").read_text(),
        (ROOT / "docs" / "usage.md").read_text(),
    ):
        assert re.search(r"min/max\s+inside\s+the\s+(ROI|cutout)", text), (
            "the data's range is not said"
        )


# --- item 23: a signal during start-up exits 130 / 143 without a traceback ------------------


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


# --- item 25: docs list every format and setting; messages name what the user typed -----------


def _table_formats(text: str) -> set[str]:
    section = text.split("## Formats", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE))


def test_item25_usage_format_table_lists_every_format():
    assert _table_formats((ROOT / "docs" / "usage.md").read_text()) == set(formats())


def test_item25_readme_format_comment_lists_every_format():
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.strip().startswith("format="))
    listed = {name.strip() for name in line.split("#", 1)[1].split("|")}
    assert listed == set(formats()), line


def test_item25_batch_docs_list_every_settings_key():
    text = (ROOT / "docs" / "batch.md").read_text()
    keys = text.split("`[settings]` keys are the fields of `ExportSettings`:", 1)[1].split(
        "\n- ", 1
    )[0]
    listed = set(re.findall(r"`([a-z][a-z_]*)`", keys))
    assert listed == {f.name for f in dataclasses.fields(le.ExportSettings)}


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
