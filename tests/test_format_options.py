"""Format options declared by the writers (lazyexport/formats/options.py): a new option touches
its writer only. ``demo_greeting``, declared by the throwaway format of
tests/helpers/contract_plugin.py and nowhere in lazyexport, is accepted from Python, the command
line and a project file, reaches the writer through ``OutputSpec.options``, is refused in one
line for the other formats and is listed by ``lazyexport formats`` and ``--help``. The plugin
runs in subprocesses: this process's registry keeps the built-in formats only. docs/formats.md's
option table is checked against the declarations."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import lazyexport as le
from helpers import ROOT, cli_env
from lazyexport.errors import SettingsError
from lazyexport.formats import formats, get_writer
from lazyexport.formats.base import FORMAT_OPTIONS, Capabilities, Writer
from lazyexport.formats.options import BUILTIN, Option, builtin, declared_by, values_for
from lazyexport.settings import MIRRORED, declared_options


def _with_plugin(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env["PYTHONPATH"]])
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The command line with the plugin's format registered."""
    code = (
        "import sys, helpers.contract_plugin; from lazyexport.entry import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    return _with_plugin("-c", code, *map(str, args), cwd=cwd)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "vol.npy"
    np.save(path, np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8))
    return path


def test_a_declared_option_reaches_the_writer_from_python_and_a_project_file(tmp_path, source):
    project = tmp_path / "project.toml"
    project.write_text(
        textwrap.dedent(
            f"""
            [settings]
            format = "npy-contract"
            output = "{tmp_path}/{{nickname}}_out.npy"
            demo_greeting = "good morning"

            [[datasets]]
            source = "{source}"
            nickname = "a"

            [[datasets]]
            source = "{source}"
            nickname = "b"
            settings = {{ demo_greeting = "good evening" }}
            """
        )
    )
    code = textwrap.dedent(
        f"""
        import helpers.contract_plugin
        import lazyexport as le
        from lazyexport.batch import Batch

        s = le.ExportSettings(format="npy-contract", options={{"demo_greeting": "  hi "}})
        print("settings", dict(s.options))
        plain = le.ExportSettings(format="npy-contract", output={str(tmp_path / "d.npy")!r})
        default = le.plan({str(source)!r}, plain)
        print("default", dict(default.spec.options))
        print("roundtrip", le.ExportSettings.from_json(s.to_json()) == s)
        plan = le.plan({str(source)!r}, s.replace(output={str(tmp_path / "x.npy")!r}))
        print("spec", dict(plan.spec.options))
        print("notes", [n for n in plan.notes if n.startswith("greeting")])
        batch = Batch.load({str(project)!r})
        for nick in ("a", "b"):
            print("project", nick, dict(batch.settings_for(nick).options))
            print("planned", nick, [n for n in batch.plan(nick).notes if n.startswith("greeting")])
        again = Batch.load(batch.save({str(tmp_path / "saved.toml")!r}))
        print("saved", [dict(again.settings_for(n).options) for n in ("a", "b")])
        """
    )
    done = _with_plugin("-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "settings {'demo_greeting': 'hi'}",
        "default {'demo_greeting': 'hello'}",
        "roundtrip True",
        "spec {'demo_greeting': 'hi'}",
        "notes ['greeting: hi']",
        "project a {'demo_greeting': 'good morning'}",
        "planned a ['greeting: good morning']",
        "project b {'demo_greeting': 'good evening'}",
        "planned b ['greeting: good evening']",
        "saved [{'demo_greeting': 'good morning'}, {'demo_greeting': 'good evening'}]",
    ]
    saved = (tmp_path / "saved.toml").read_text()
    assert 'demo_greeting = "good morning"' in saved and "options" not in saved


def test_a_declared_option_is_refused_in_one_line_for_other_formats_and_bad_values():
    code = textwrap.dedent(
        """
        import helpers.contract_plugin
        import lazyexport as le
        for kwargs in (
            dict(format="npy", options={"demo_greeting": "hi"}),
            dict(format="npy-contract", options={"demo_greeting": "  "}),
            dict(format="npy-contract", options={"demo_greting": "hi"}),
        ):
            try:
                le.ExportSettings(**kwargs)
            except le.ExportError as exc:
                print(exc)
        """
    )
    done = _with_plugin("-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "demo_greeting (--demo-greeting: a greeting in the plan) does not apply to format npy, "
        "only to npy-contract; drop it or choose that format",
        "demo_greeting (--demo-greeting: a greeting in the plan): give a non-empty text, got '  '",
        "unknown format option 'demo_greting'; known: demo_greeting, downsample, downsample_axes, "
        "level_chunks, levels, tiff_flavor",
    ]


def test_a_declared_option_on_the_command_line(tmp_path, source):
    out = tmp_path / "out.npy"
    base = ["export", source, "--output", out, "--plan"]
    saved = tmp_path / "saved.toml"
    done = _cli(
        *base, "--format", "npy-contract", "--demo-greeting", "hi", "--save-settings", saved
    )
    assert done.returncode == 0, done.stderr
    assert "note       greeting: hi" in done.stdout
    assert 'demo_greeting = "hi"' in saved.read_text()
    refused = _cli(*base, "--format", "npy", "--demo-greeting", "hi")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: demo_greeting (--demo-greeting: a greeting in the plan) does not apply to format "
        "npy, only to npy-contract; drop it or choose that format"
    ]
    assert not out.exists()
    listed = _cli("formats")
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("npy-contract ")]
    assert row.endswith("options: demo_greeting")
    helped = _cli("export", "--help")
    assert re.search(r"--demo-greeting TEXT\s+npy-contract: a throwaway option", helped.stdout)


def test_without_the_plugin_no_format_declares_an_option_of_its_own():
    """The built-in formats read the built-in options (ExportSettings fields) and the ones
    moved into their writers (still ExportSettings keywords: settings.MIRRORED), and ome-zarr's
    downsample_axes and level_chunks (declared by its writer, never fields) only."""
    assert set(declared_options()) == {*MIRRORED, "downsample_axes", "level_chunks"}
    with pytest.raises(
        SettingsError,
        match=r"^unknown format option 'demo_greeting'; known: downsample, downsample_axes, "
        r"level_chunks, levels, tiff_flavor$",
    ):
        le.ExportSettings(options={"demo_greeting": "hi"})
    assert list(FORMAT_OPTIONS) == [o.name for o in BUILTIN]


def test_a_writer_declaring_an_option_reads_it():
    option = Option("demo_level", "a level", "a level, 1 to 3", 2, choices=(1, 2, 3), parse=int)

    class Demo(Writer):
        name = "demo"
        capabilities = Capabilities(options=frozenset({"unit"}))
        options = (option,)

    assert Demo.capabilities.options == {"unit", "demo_level"}
    assert Demo.capabilities.declared == {"demo_level"}
    assert values_for(Demo(), None) == {"demo_level": 2}
    assert values_for(Demo(), {"demo_level": 3}) == {"demo_level": 3}
    assert option.flag == "--demo-level" and option.validate(1) == 1
    with pytest.raises(SettingsError, match=r"^demo_level \(--demo-level: a level\) cannot be 5;"):
        option.validate(5)

    class Other(Writer):
        name = "other"
        options = (Option("demo_level", "another level", "another"),)

    with pytest.raises(ValueError, match="declares option 'demo_level', which is already declared"):
        declared_by([Demo(), Other()])
    with pytest.raises(ValueError, match="lower-case identifier"):
        Option("Demo-Level", "x", "x")


def _docs_table() -> dict[str, tuple[str, set[str]]]:
    """docs/formats.md's "Format options" table: option -> (flag, formats)."""
    text = (ROOT / "docs" / "formats.md").read_text()
    section = text.split("## Format options", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] not in ("option", "") and not cells[0].startswith("-"):
            rows[cells[0]] = (cells[1], {f.strip().strip("`") for f in cells[2].split(",")})
    return rows


def test_the_docs_option_table_is_the_declarations():
    """Every built-in or declared option has its row in docs/formats.md, with its flag and the
    formats that read it, and the table has no other row."""
    options = [*BUILTIN, *declared_options().values()]
    expected = {
        o.name: (o.flag, {f for f in formats() if o.name in get_writer(f).capabilities.options})
        for o in options
    }
    assert _docs_table() == expected


@pytest.mark.parametrize(
    "name, value, normalized, refused",
    [
        ("tiff_flavor", "OME", "ome", "unknown TIFF flavor 'bigtiff'; choose one of plain, imagej"),
        ("downsample", "Mode", "mode", "unknown downsample method 'bigtiff'; choose one of mean"),
        ("levels", 3, 3, "levels must be a whole number from 1 to 32, got 'bigtiff'"),
        ("zarr_format", 2, 2, "zarr_format must be 2 or 3, got 'bigtiff'"),
    ],
)
def test_a_builtin_option_is_checked_by_its_declaration(name, value, normalized, refused):
    """The settings check a built-in option's value through its declaration: the same result
    and the same one-line message either way."""
    option = builtin(name) if name not in MIRRORED else declared_options()[name]
    assert option.validate(value) == normalized
    fmt = {"tiff_flavor": "tiff", "zarr_format": "zarr"}.get(name, "ome-zarr")
    given: dict[str, Any] = {name: value}
    assert getattr(le.ExportSettings(format=fmt, **given), name) == normalized
    for check in (
        lambda: option.validate("bigtiff"),
        lambda: le.ExportSettings(**{name: "bigtiff"}),  # type: ignore[arg-type]
    ):
        with pytest.raises(SettingsError, match="^" + re.escape(refused)):
            check()
