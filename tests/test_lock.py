"""The locks of the test environment (requirements/test-pyX.Y.txt) and the Makefile's use of them.

There is one lock for every Python version pyproject.toml's classifiers name (make test runs on
each).
A lock pins every requirement of lazyexport and of its test extra that applies on its Python, at a
version the requirement's specifier admits, so ``pip install -r LOCK`` followed by
``pip install --no-deps -e .`` installs a complete environment without resolving anything. The
Makefile installs every virtual environment that way (never ``-e '.[test]'``), and a changed lock
reinstalls it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSIONS = [
    c.rsplit("::", 1)[1].strip()
    for c in PROJECT["classifiers"]
    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
]
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$")


def lock_path(version: str) -> Path:
    return ROOT / "requirements" / f"test-py{version}.txt"


def pins(version: str) -> dict[str, Version]:
    """The lock's ``name==version`` lines by normalized name; any other requirement line fails."""
    found: dict[str, Version] = {}
    for line in lock_path(version).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{lock_path(version).name}: not a pin: {line!r}"
        found[canonicalize_name(match[1])] = Version(match[2])
    return found


def requirements(version: str) -> list[Requirement]:
    """lazyexport's own and its test extra's requirements that apply on Python ``version``."""
    environment = {"python_version": version, "python_full_version": f"{version}.0", "extra": ""}
    listed = [Requirement(r) for r in PROJECT["dependencies"]]
    listed += [Requirement(r) for r in PROJECT["optional-dependencies"]["test"]]
    return [r for r in listed if r.marker is None or r.marker.evaluate(environment)]


def test_a_lock_for_every_python_the_project_admits() -> None:
    assert RUNNING in VERSIONS, f"Python {RUNNING} is not among the classifiers {VERSIONS}"
    for version in VERSIONS:
        assert lock_path(version).is_file(), f"no lock for Python {version}: run make lock"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_lock_pins_every_requirement_within_its_specifier(version: str) -> None:
    pinned, lock = pins(version), lock_path(version).name
    for requirement in requirements(version):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} does not pin {requirement}: make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement}: make lock"
        )


@pytest.mark.parametrize("version", VERSIONS)
def test_the_lock_says_how_it_was_made(version: str) -> None:
    head = lock_path(version).read_text().split("\n", 4)[:4]
    assert "make lock" in " ".join(head) and f"Python {version}" in head[0]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """``make ARGS`` in the project root, with the running interpreter as the default Python."""
    command = ["make", "--no-print-directory", f"PYTHON={sys.executable}", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)


def test_the_default_environment_installs_from_the_lock_without_resolving(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    shown = make("-n", f"VENV={venv}", f"{venv}/.installed")
    assert shown.returncode == 0, shown.stderr
    lock = f"requirements/test-py{RUNNING}.txt"
    uv = f"{venv}-lock/bin/uv pip install --quiet"
    assert f"{uv} --compile-bytecode --python {venv}/bin/python -r {lock}" in shown.stdout
    assert f"{uv} --python {venv}/bin/python --no-deps -e ." in shown.stdout
    assert ".[test]" not in shown.stdout


def test_every_other_python_installs_from_its_lock() -> None:
    shown = make("-n", "test-pythons")
    assert shown.returncode == 0, shown.stderr
    assert "lock=requirements/test-py$v.txt" in shown.stdout
    uv = ".venv-lock/bin/uv pip install --quiet"
    assert f"{uv} --compile-bytecode --python $venv/bin/python -r $lock" in shown.stdout
    assert f"{uv} --python $venv/bin/python --no-deps -e ." in shown.stdout
    assert "[ $lock -nt $venv/.installed ]" in shown.stdout
    assert ".[test]" not in shown.stdout


def test_a_changed_lock_reinstalls_the_environment(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    uv = tmp_path / "venv-lock" / "bin" / "uv"  # the installer, made before the environment
    uv.parent.mkdir(parents=True)
    uv.touch()
    (venv / ".installed").touch()
    stamp = f"{venv}/.installed"
    assert make("-q", f"VENV={venv}", stamp).returncode == 0, "a fresh stamp is up to date"
    lock = f"requirements/test-py{RUNNING}.txt"
    assert make("-q", f"VENV={venv}", "-W", lock, stamp).returncode == 1
    assert make("-q", f"VENV={venv}", "-W", "pyproject.toml", stamp).returncode == 1
