"""Where outputs are written: temporary names, the atomic commit, and what killed exports leave.

Every export run has a *token*. Everything it creates before its outputs are final lies beside
the output (the file, store or container it names) under a hidden name::

    .{name}.lazyexport-{token}.{kind}

``kind`` is ``tmp`` (the output being written), ``raw`` / ``stage`` (uncompressed working files),
``blocks`` (the journal of a ``--resume`` export), ``owner`` (who runs a ``--resume`` export),
``commit`` (the renames of a commit under way) or ``old`` (a replaced output on its way out).

Who owns a temporary is read from its token: a run's random token names the process that made
it (``t<random>p<pid>h<host>``), so a temporary whose process is gone is an *orphan*; a
``--resume`` export's token is a hash of its plan (``r<hash>``), owned while an ``owner`` file
names a live process. Orphans are removed by the next export of the same output and by
:func:`clean` (``lazyexport clean``).

The commit writes a *commit record* (the list of renames, fsynced) before the first rename and
removes it after the last: a run killed in between leaves complete temporaries and the record,
and whoever finds the record of a dead run finishes the renames (:func:`finish_commit`) rather
than leaving a half-renamed output or deleting finished data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

KINDS = ("tmp", "raw", "stage", "blocks", "owner", "commit", "old")
_NAME = re.compile(r"\.(?P<prefix>.+)\.lazyexport-(?P<token>[0-9a-z]+)\.(?P<kind>[a-z]+)(?:\.new)?")
_RUN_TOKEN = re.compile(r"t[0-9a-f]{8}p(?P<pid>\d+)h(?P<host>[0-9a-f]{6})")

# tokens of the runs this process has under way (a finished run's token is dropped, so its
# leftovers count as orphans even though this process lives on)
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def new_token() -> str:
    """A token for one export run, naming this process (see the module docs)."""
    return f"t{uuid.uuid4().hex[:8]}p{os.getpid()}h{_host_tag()}"


def temp_path(final: Path, token: str, kind: str = "tmp") -> Path:
    """The hidden name of ``kind`` beside ``final`` for the run ``token``: the final rename
    never crosses file systems."""
    return final.with_name(f".{final.name}.lazyexport-{token}.{kind}")


@dataclasses.dataclass(frozen=True)
class Run:
    """An export run under way in this process: its token, registered while it runs."""

    token: str

    def __enter__(self) -> Run:
        with _ACTIVE_LOCK:
            _ACTIVE.add(self.token)
        return self

    def __exit__(self, *exc) -> None:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self.token)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # someone else's process
        return True
    return True


def _process_alive(pid: int, host: str, token: str) -> bool | None:
    """Whether the process that runs ``token`` is alive; None where this machine cannot tell."""
    if host != _host_tag():
        return None
    if pid == os.getpid():
        with _ACTIVE_LOCK:
            return token in _ACTIVE
    return _pid_alive(pid)


# -- ownership of --resume exports -------------------------------------------------------------

class Busy(Exception):
    """Another live export owns what this one wanted to claim."""


def claim(owner_file: Path, token: str) -> None:
    """Make this process the owner of the ``--resume`` export ``token`` (its ``owner`` file);
    raise :class:`Busy` if a live process owns it."""
    holder = owner_of(owner_file, token)
    if holder is not None and holder[1] is not False:
        raise Busy(holder[0])
    owner_file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"pid": os.getpid(), "host": _host_tag(), "hostname": socket.gethostname()})
    write_durably(owner_file, text)


def owner_of(owner_file: Path, token: str) -> tuple[str, bool | None] | None:
    """Who owns ``token`` by ``owner_file`` (a description, and whether alive: None = cannot
    tell), or None if nobody does."""
    try:
        owner = json.loads(owner_file.read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    alive = _process_alive(pid, host, token)
    where = "this host" if host == _host_tag() else f"host {owner.get('hostname', '?')}"
    return f"pid {pid} on {where}", alive


def write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` under a temporary name, fsync, rename: all or nothing."""
    temp = path.with_name(path.name + ".new")
    with open(temp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


# -- removing and replacing --------------------------------------------------------------------

def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def replace(temp: Path, final: Path, token: str) -> None:
    """Move ``temp`` to ``final``. An existing ``final`` (a file or a directory, whatever
    ``temp`` is) is first moved aside under the run's ``old`` name, then removed."""
    if final.exists() or final.is_symlink():
        if temp.is_dir() or final.is_dir() and not final.is_symlink():
            trash = temp_path(final, token, "old")
            remove(trash)
            os.replace(final, trash)
            os.replace(temp, final)
            remove(trash)
            return
    os.replace(temp, final)


def commit_renames(renames: Sequence[tuple[Path, Path]], token: str) -> None:
    """Rename each temporary to its final name, as one recorded step: the record is written
    (and fsynced) beside the first temporary first and removed last, so a kill in between can
    be finished later (:func:`finish_commit`)."""
    if not renames:
        return
    first = Path(renames[0][0])
    record = first.with_name(first.name.rpartition(".")[0] + ".commit")
    write_durably(record, json.dumps({"renames": [[str(Path(t).absolute()), str(Path(f).absolute())]
                                                  for t, f in renames]}))
    _apply(renames, token)
    remove(record)


def _apply(renames: Sequence[tuple[Path, Path]], token: str) -> None:
    for temp, final in renames:
        if temp.exists() or temp.is_symlink():
            replace(temp, final, token)


def finish_commit(record: Path) -> list[Path]:
    """Finish the renames of an interrupted commit from its record; return the final paths."""
    renames = [(Path(t), Path(f)) for t, f in json.loads(record.read_text())["renames"]]
    _apply(renames, _NAME.fullmatch(record.name)["token"])
    remove(record)
    return [f for _, f in renames]


# -- orphans -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Leftover:
    """A hidden temporary of lazyexport's found beside an output."""

    path: Path
    token: str
    kind: str
    state: str          # "orphan", "running" (a live export owns it), "unknown" (another host)
    owner: str          # who made it, as far as known

    @property
    def size(self) -> int:
        return _size(self.path)

    def describe(self) -> str:
        what = {"commit": "the record of an interrupted commit", "blocks": "a --resume journal",
                "owner": "a --resume owner file", "stage": "a staging file", "raw": "a raw working file",
                "old": "a replaced output"}.get(self.kind, "a temporary output")
        return f"{self.path} ({what}, {_human(self.size)}, {self.owner})"


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.lstat().st_size
    except OSError:
        return 0


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def leftovers(directories: Iterable[Path], prefixes: Iterable[str] | None = None) -> list[Leftover]:
    """The hidden temporaries in ``directories`` (those of outputs named ``prefixes``, or all),
    each with whether a live export owns it."""
    wanted = set(prefixes) if prefixes is not None else None
    found: list[Leftover] = []
    for directory in dict.fromkeys(Path(d) for d in directories):
        try:
            entries = sorted(directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        owners = {}
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match and match["kind"] == "owner" and not entry.name.endswith(".new"):
                owners[match["token"]] = entry
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if not match or match["kind"] not in KINDS:
                continue
            if wanted is not None and match["prefix"] not in wanted:
                continue
            found.append(Leftover(entry, match["token"], match["kind"], *_state(match["token"], owners)))
    return found


def _state(token: str, owners: dict[str, Path]) -> tuple[str, str]:
    run = _RUN_TOKEN.fullmatch(token)
    if run:
        alive = _process_alive(int(run["pid"]), run["host"], token)
        who = f"left by pid {run['pid']}" + ("" if run["host"] == _host_tag() else " on another host")
    elif token in owners and (holder := owner_of(owners[token], token)) is not None:
        alive = holder[1]
        who = f"--resume export of {holder[0]}"
    else:
        alive, who = False, "kept by an interrupted --resume export" if token.startswith("r") else "no owner"
    if alive is None:
        return "unknown", who + " (cannot tell from here whether it still runs)"
    return ("running", who + ", running now") if alive else ("orphan", who)


def clean(directories: Iterable[Path], prefixes: Iterable[str] | None = None, *, keep: str | None = None,
          dry_run: bool = False) -> tuple[list[Leftover], list[Leftover]]:
    """Remove the orphans among :func:`leftovers` (all but ``keep``'s); the record of an
    interrupted commit is finished first (its temporaries are complete outputs). Returns
    (removed or finished, left alone because a live export, or one this host cannot see, owns it)."""
    found = [f for f in leftovers(directories, prefixes) if f.token != keep]
    done, kept = [], []
    for item in sorted(found, key=lambda f: f.kind != "commit"):   # records first
        if item.state != "orphan":
            kept.append(item)
            continue
        done.append(item)
        if dry_run or not (item.path.exists() or item.path.is_symlink()):
            continue
        if item.kind == "commit":
            try:
                finish_commit(item.path)
                continue
            except (OSError, ValueError, KeyError, TypeError):
                pass     # an unreadable record: its temporaries are removed like any orphan
        remove(item.path)
    return done, kept


def clean_path(path: Path, *, dry_run: bool = False) -> tuple[list[Leftover], list[Leftover]]:
    """:func:`clean` for ``lazyexport clean PATH``: the leftovers of the output ``PATH`` (beside
    it), and where ``PATH`` is a directory, every leftover directly inside it."""
    path = Path(path)
    done, kept = clean([path.parent], [path.name], dry_run=dry_run)
    if path.is_dir():
        more = clean([path], dry_run=dry_run)
        done, kept = done + more[0], kept + more[1]
    return done, kept
