"""Where outputs are written: temporary names, the atomic commit, and what killed exports leave.

Every export run has a *token*. Everything it creates before its outputs are final lies beside
the output (the file, store or container it names) under a hidden name::

    .{name}.lazyexport-{token}.{kind}

``kind`` is ``tmp`` (the output being written), ``raw`` / ``stage`` (uncompressed working files),
``blocks`` (the journal of a ``--resume`` export), ``owner`` (who runs a ``--resume`` export),
``commit`` (the renames of a commit under way), ``old`` (a replaced output on its way out) or
``lazy`` (a ``compute=False`` export not computed yet: removed when it commits). An ``owner``
file is written through ``….owner.<random>.part`` and a dead run's is taken over through a
marker ``….owner.take-<hash>`` (:mod:`lazyexport.storage.runs`): both are leftovers of the run
too (kinds ``part`` and ``take``), held by the process whose record they hold, else as the
run's other temporaries.

Who owns a temporary is read from its token: a run's random token names the process that made
it (``t<random>p<pid>h<host>``), so a temporary whose process is gone is an *orphan*; a
``--resume`` export's token is a hash of its plan (``r<hash>``), owned while an ``owner`` file
names a live process. Orphans are removed by the next export of the same output and by
:func:`clean` (``lazyexport clean``).

Those names can be predicted (a ``--resume`` token is a hash of the plan), so nothing is written,
read as a record or deleted *through* a symbolic link found at one of them: records and journals
are created with ``O_EXCL | O_NOFOLLOW`` (a link found there is replaced, never its target), a
deletion removes a link itself, and a ``--resume`` export refuses, in one line, a link at any
name of its run or inside the temporary output it would continue (:func:`refuse_links`).

The commit writes a *commit record* (the list of renames, fsynced; one copy in every directory
that holds temporaries) before the first rename and removes it after the last rename and after
the run's working files (journal, staging file): a run killed in between leaves complete
temporaries and the record, and whoever finds the record of a dead run finishes the renames
(:func:`finish_commit`) rather than leaving a half-renamed output or deleting finished data -
unless an output is newer than the record (someone wrote it since):
that one is kept, and the stale temporary dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import OutputLocationError
from .files import NOFOLLOW, FileBackend
from .runs import RUN_TOKEN, host_tag, owner_state, process_alive

KINDS = ("tmp", "raw", "stage", "blocks", "owner", "commit", "old", "lazy")
NAME = re.compile(
    r"\.(?P<prefix>.+)\.lazyexport-(?P<token>[0-9a-z]+)\.(?P<kind>[a-z]+)"
    r"(?P<take>\.take-[0-9a-f]{16})?(?:\.new|(?P<part>\.[0-9a-f]{32}\.part))?"
)


def temp_path(final: Path, token: str, kind: str = "tmp") -> Path:
    """The hidden name of ``kind`` beside ``final`` for the run ``token``."""
    return final.with_name(f".{final.name}.lazyexport-{token}.{kind}")


# -- ownership of --resume exports -------------------------------------------------------------


def owner_of(owner_file: Path, token: str) -> tuple[str, bool | None] | None:
    """Who owns ``token`` by ``owner_file`` (a description, and whether alive: None = cannot
    tell), or None if nobody does."""
    try:
        return owner_state(owner_file.read_bytes(), token)
    except OSError:
        return None


def write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` under a temporary name, fsync, rename: all or nothing. Neither
    name is written through a symbolic link: the temporary is created anew (:func:`create_new`),
    and the rename replaces a link at ``path`` itself."""
    temp = path.with_name(path.name + ".new")
    fd = create_new(temp)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk: no half-written record is left behind
        remove(temp)
        raise
    os.replace(temp, path)


def create_new(path: Path, mode: int = 0o644) -> int:
    """Create the file ``path`` for writing (``O_EXCL | O_NOFOLLOW``); return its descriptor.
    What is there already (a killed run's file, or a link someone planted at this predictable
    name) is unlinked first: the entry itself, never what a link points to (nor a directory)."""
    for _ in range(3):
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)
        except FileExistsError:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError:  # a directory, or another user's entry in a sticky directory
                break
    raise OutputLocationError(
        f"{path} is in the way and cannot be removed; lazyexport never writes through what it "
        "did not create there: remove it"
    )


def refuse_links(directories: Iterable[Path], token: str) -> None:
    """Refuse (one line) a symbolic link at any name of the run ``token`` in ``directories``
    (its temporary output, journal, owner file, commit record, staging file), or anywhere inside
    a temporary output of it that is kept for ``--resume``: lazyexport never writes, reads
    renames from or deletes through a link it did not make."""
    for directory in dict.fromkeys(Path(d) for d in directories):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = NAME.fullmatch(entry.name)
            if match is None or match["token"] != token:
                continue
            if entry.is_symlink():
                raise _linked(Path(entry.path))
            if entry.is_dir(follow_symlinks=False):
                for root, dirs, files in os.walk(entry.path):  # never into a linked directory
                    for name in sorted(dirs + files):
                        if os.path.islink(os.path.join(root, name)):
                            raise _linked(Path(root) / name)


def _linked(path: Path) -> OutputLocationError:
    return OutputLocationError(
        f"{path} is a symbolic link, at a name of this export's own temporaries; lazyexport "
        "never writes through one: remove it, or export without --resume"
    )


# -- removing and replacing --------------------------------------------------------------------


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def with_kind(temp: Path, kind: str) -> Path:
    """The name of another ``kind`` of the same run beside the temporary ``temp``."""
    return temp.with_name(f"{temp.name.rpartition('.')[0]}.{kind}")


def replace(temp: Path, final: Path) -> None:
    """Move ``temp`` to ``final``. An existing ``final`` that is a directory, or that a
    directory replaces, is first moved aside (beside ``temp``, under the ``old`` kind), then
    removed."""
    if final.exists() or final.is_symlink():
        if temp.is_dir() or final.is_dir() and not final.is_symlink():
            trash = with_kind(temp, "old")
            remove(trash)
            os.replace(final, trash)
            os.replace(temp, final)
            remove(trash)
            return
    os.replace(temp, final)


def commit_renames(renames: Sequence[tuple[Path, Path]], then_remove: Sequence[Path] = ()) -> None:
    """Rename each temporary to its final name, as one recorded step: the record is written
    (and fsynced) beside the temporaries first and removed last, so a kill in between can be
    finished later (:func:`finish_commit`). ``then_remove`` (a journal, a staging file, an old
    output this one replaces without a rename: a longer sequence's tail) is in the record too
    and goes after the renames and before the record: a kill can never leave it beside finished
    outputs with nothing to say it is stale."""
    if not renames:
        for path in then_remove:
            remove(path)
        return
    records = list(dict.fromkeys(_record_of(Path(t).parent, renames) for t, _ in renames))
    text = json.dumps(
        {
            "renames": [[str(Path(t).absolute()), str(Path(f).absolute())] for t, f in renames],
            "records": [str(r.absolute()) for r in records],
            "remove": [str(Path(p).absolute()) for p in then_remove],
        }
    )
    for record in records:
        write_durably(record, text)
    for temp, final in renames:
        replace(temp, final)
    for path in then_remove:
        remove(path)
    for record in records:
        remove(record)


def _record_of(directory: Path, renames: Sequence[tuple[Path, Path]]) -> Path:
    """The commit record for the temporaries in ``directory``: beside the first of them, named
    after it (a node moved out of a temporary store: after that store)."""
    first = next(Path(t) for t, _ in renames if Path(t).parent == directory)
    hidden = next((p for p in (first, *first.parents) if NAME.fullmatch(p.name)), first)
    return with_kind(hidden, "commit")


def finish_commit(record: Path) -> list[Path]:
    """Finish the renames of an interrupted commit from its record; return the final paths.
    An output that is newer than the record was written since by someone else: it is kept,
    and its stale temporary removed."""
    data = json.loads(record.read_text())
    written = record.stat().st_mtime_ns
    finals = []
    for temp, final in ((Path(t), Path(f)) for t, f in data["renames"]):
        finals.append(final)
        if not (temp.exists() or temp.is_symlink()):
            continue  # renamed before the kill
        if (final.exists() or final.is_symlink()) and final.lstat().st_mtime_ns > written:
            remove(temp)
            continue
        replace(temp, final)
    for path in map(Path, data.get("remove", [])):  # unless written since, by someone else
        if (path.exists() or path.is_symlink()) and path.lstat().st_mtime_ns <= written:
            remove(path)
    for copy in data.get("records", [str(record)]):
        remove(Path(copy))
    return finals


# -- orphans -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leftover:
    """A hidden temporary of lazyexport's found beside an output."""

    path: Path
    token: str
    kind: str
    state: str  # "orphan", "running" (a live export owns it), "unknown" (another host)
    owner: str  # who made it, as far as known
    size: int | None = None  # bytes, measured when asked (see :func:`clean`)

    def describe(self) -> str:
        what = {
            "commit": "an interrupted commit, finished: its renames done",
            "blocks": "a --resume journal",
            "owner": "a --resume owner file",
            "take": "a marker of a --resume owner file's takeover",
            "part": "an owner record or journal whose writing never finished",
            "stage": "a staging file",
            "raw": "a raw working file",
            "old": "a replaced output",
            "lazy": "a compute=False export's mark, not computed",
            "new": "a record or journal whose writing never finished (its commit never began)",
        }.get(self.kind, "a temporary output")
        size = self.size if self.size is not None else _size(self.path)
        return f"{self.path} ({what}, {_human(size)}, {self.owner})"


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.lstat().st_size
    except OSError:
        return 0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def leftovers(directories: Iterable[Path], prefixes: Iterable[str] | None = None) -> list[Leftover]:
    """The hidden temporaries in ``directories`` (those of outputs named ``prefixes``, or all),
    each with whether a live export owns it. A run with a temporary among them that was killed
    while committing comes whole: its record and every file of its, whatever output they are
    named after (a sequence's record and staging file are named after its first slice)."""
    wanted = set(prefixes) if prefixes is not None else None
    entries = []
    for directory in dict.fromkeys(Path(d) for d in directories):
        try:
            listing = sorted(directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        owners: dict[str, Path] = {}
        for entry in listing:
            match = NAME.fullmatch(entry.name)
            if match and match["kind"] in KINDS:
                entries.append((entry, match, owners))
                if match["kind"] == "owner" and _kind(entry, match) == "owner":
                    owners[match["token"]] = entry
    picked = [wanted is None or m["prefix"] in wanted for _, m, _ in entries]
    tokens = {m["token"] for (_, m, _), p in zip(entries, picked) if p}
    committing = {
        m["token"] for _, m, _ in entries if m["kind"] == "commit" and m["token"] in tokens
    }
    return [
        Leftover(entry, m["token"], _kind(entry, m), *_state(entry, m, owners))
        for (entry, m, owners), p in zip(entries, picked)
        if p or m["token"] in committing
    ]


def _kind(entry: Path, match: re.Match) -> str:
    """The kind of a leftover; ``new`` for the temporary of a :func:`write_durably` that never
    finished (a ``.commit.new``: the renames never began, so it is an orphan like any other);
    ``part`` for an owner record (or marker) whose writing never finished (``<name>.<random>
    .part``); ``take`` for the marker of a taker of a dead run's owner file
    (``.owner.take-<hash>``, :func:`~lazyexport.storage.runs.marker_of`)."""
    if entry.name.endswith(".new"):
        return "new"
    return "part" if match["part"] else "take" if match["take"] else match["kind"]


def _state(entry: Path, match: re.Match, owners: dict[str, Path]) -> tuple[str, str]:
    """:func:`state_of` the leftover's token; a takeover marker or a record's part that names a
    live process (the taker's own record) is that process's, running, whatever the owner file
    says. It is read as a record: never through a link."""
    if match["take"] or match["part"]:
        try:
            data = FileBackend(entry.parent).read(entry.name)
        except OSError:
            data = b""
        holder = owner_state(data, match["token"])
        if holder is not None and holder[1] is not False:
            return _said(holder[1], f"--resume owner takeover by {holder[0]}")
    return state_of(match["token"], owners)


def state_of(token: str, owners: dict[str, Path]) -> tuple[str, str]:
    run = RUN_TOKEN.fullmatch(token)
    if run:
        alive = process_alive(int(run["pid"]), run["host"], token)
        who = f"left by pid {run['pid']}" + (
            "" if run["host"] == host_tag() else " on another host"
        )
    elif token in owners and (holder := owner_of(owners[token], token)) is not None:
        alive = holder[1]
        who = f"--resume export of {holder[0]}"
    else:
        alive, who = (
            False,
            "kept by an interrupted --resume export" if token.startswith("r") else "no owner",
        )
    return _said(alive, who)


def _said(alive: bool | None, who: str) -> tuple[str, str]:
    if alive is None:
        return "unknown", who + " (cannot tell from here whether it still runs)"
    return ("running", who + ", running now") if alive else ("orphan", who)


def clean(
    directories: Iterable[Path],
    prefixes: Iterable[str] | None = None,
    *,
    keep: str | None = None,
    dry_run: bool = False,
) -> tuple[list[Leftover], list[Leftover]]:
    """Remove the orphans among :func:`leftovers` (all but ``keep``'s). An interrupted commit is
    finished first (its temporaries are complete outputs); if that fails, nothing of its run is
    removed. Returns (removed or finished, left alone: a live export, one this host cannot see,
    or a commit that could not be finished owns it)."""
    found = [f for f in leftovers(directories, prefixes) if f.token != keep]
    committing = {f.token for f in found if f.kind == "commit"}
    done, kept = [], []
    stuck: set[str] = set()
    for item in sorted(found, key=lambda f: f.kind != "commit"):  # records first
        if item.state != "orphan" or item.token in stuck:
            kept.append(item)
            continue
        if not (item.path.exists() or item.path.is_symlink()):
            continue  # renamed by a commit finished just now, or removed with it
        if dry_run and item.kind != "commit" and item.token in committing:
            continue  # finishing the commit renames it into place
        if item.kind == "commit" and not dry_run:
            try:
                finish_commit(item.path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                stuck.add(item.token)
                kept.append(
                    dataclasses.replace(item, owner=f"{item.owner}; cannot finish it: {exc}")
                )
                continue
        else:
            item = dataclasses.replace(item, size=_size(item.path))  # while it is still there
            if not dry_run:
                remove(item.path)
        done.append(item)
    return done, kept


def clean_path(path: Path, *, dry_run: bool = False) -> tuple[list[Leftover], list[Leftover]]:
    """:func:`clean` for ``lazyexport clean PATH``: the leftovers of the output ``PATH`` (beside
    it, or beside the store or file that holds it, for ``a.zarr/export``), and where ``PATH`` is
    a directory, every leftover directly inside it."""
    path = Path(path)
    dirs, names = [path.parent], [path.name]
    for outer in path.parents:  # the container of a node: its temporaries lie beside it
        if outer.is_dir() and any((outer / f).exists() for f in CONTAINER_MARKERS):
            dirs.append(outer.parent)
            names.append(outer.name)
    done, kept = clean(dirs, names, dry_run=dry_run)
    if path.is_dir():
        more = clean([path], dry_run=dry_run)
        done, kept = done + more[0], kept + more[1]
    return done, kept


# files that make a directory a store which may hold an output node (Zarr v3, v2, N5)
CONTAINER_MARKERS = ("zarr.json", ".zgroup", "attributes.json")
