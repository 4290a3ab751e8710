"""Export runs and who owns them: run tokens, whether a run's process lives, and the atomic
ownership claim of a ``--resume`` export, over any :class:`~lazyexport.storage.backend.Backend`.

A run's random token names the process that made it (``t<random>p<pid>h<host>``); a process
counts as running a token only while it holds it in a :class:`Run`. Whether a process on
another host lives cannot be told from here (None).

The claim (:func:`claim_key`) is one owner record created with :meth:`Backend.put_new`: of any
number of runs claiming one key at once, exactly one creates it; the others read it and get
:class:`Busy`. A record whose process is dead (or that cannot be read) is *taken over*, never
deleted and re-created (two takers could each delete the other's fresh record and both win):
a taker first creates a marker named after the stale record's hash (:func:`marker_of`) with
``put_new`` - one taker wins it - then checks that the marker still holds its own record and
the record is still the stale one, and only then replaces it (:meth:`Backend.replace`: on an
object store a put conditional on the stale record's entity tag). A taker killed midway leaves its
marker; it is taken over the same way (a marker of *its* hash, then a check that it is still
there before it is replaced), up to :data:`MAX_TAKERS` deep. Nothing is ever deleted because of
a read that may be stale: a run deletes only a marker it made and still finds its own. Each
record holds a random nonce, so two records (and so two markers' names) are never the same.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import socket
import threading
import uuid

from .backend import Backend

RUN_TOKEN = re.compile(r"t[0-9a-f]{8}p(?P<pid>\d+)h(?P<host>[0-9a-f]{6})")

# tokens of the runs this process has under way (a finished run's token is dropped, so its
# leftovers count as orphans even though this process lives on)
_RUNS: collections.Counter[str] = collections.Counter()  # a token may run twice at once
_RUNS_LOCK = threading.Lock()
# the owner records this process claimed, by token (their nonces), and those of runs that ended:
# a record of this process whose run has ended is dead, even while another run of the same
# token is registered (the run that claims is registered before its record exists)
_CLAIMED: collections.defaultdict[str, set[str]] = collections.defaultdict(set)
_ENDED: set[str] = set()


def host_tag() -> str:
    """This host's short tag, as run tokens and owner records name it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def new_token() -> str:
    """A token for one export run, naming this process (see the module docs)."""
    return f"t{uuid.uuid4().hex[:8]}p{os.getpid()}h{host_tag()}"


@dataclasses.dataclass(frozen=True)
class Run:
    """An export run under way in this process: its token, registered while it runs."""

    token: str

    def __enter__(self) -> Run:
        with _RUNS_LOCK:
            _RUNS[self.token] += 1
        return self

    def __exit__(self, *exc) -> None:
        with _RUNS_LOCK:
            _RUNS[self.token] -= 1  # a second run of the same token (refused or not)
            if _RUNS[self.token] <= 0:  # leaves the first one registered
                del _RUNS[self.token]
                _ENDED.update(_CLAIMED.pop(self.token, ()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def process_alive(pid: int, host: str, token: str, nonce: str | None = None) -> bool | None:
    """Whether the process that runs ``token`` is alive; None where this machine cannot tell.
    In this process: whether a run of ``token`` is registered, and the record (its ``nonce``) is
    not one a run that has ended claimed."""
    if host != host_tag():
        return None
    if pid == os.getpid():
        with _RUNS_LOCK:
            return _RUNS[token] > 0 and nonce not in _ENDED
    return _pid_alive(pid)


# -- ownership of --resume exports -------------------------------------------------------------


class Busy(Exception):
    """Another live export owns what this one wanted to claim."""


def owner_record() -> bytes:
    """A new owner record naming this process (with a nonce: no two records are equal)."""
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": host_tag(),
            "hostname": socket.gethostname(),
            "nonce": uuid.uuid4().hex,
        }
    ).encode()


def owner_state(data: bytes, token: str) -> tuple[str, bool | None] | None:
    """Who owns ``token`` by the owner record ``data`` (a description, and whether alive: None
    = cannot tell), or None if it names nobody (unreadable)."""
    try:
        owner = json.loads(data)
        pid, host = int(owner["pid"]), str(owner["host"])
    except (ValueError, KeyError, TypeError):
        return None
    alive = process_alive(pid, host, token, owner.get("nonce"))
    where = "this host" if host == host_tag() else f"host {owner.get('hostname', '?')}"
    return f"pid {pid} on {where}", alive


def claim_key(backend: Backend, key: str, token: str) -> None:
    """Make this process the owner of ``token`` by the record ``key`` of ``backend``; raise
    :class:`Busy` if a live process (or one on another host: nobody here can tell) owns it.
    Atomic: of runs claiming at once, exactly one returns (see the module docs)."""
    record = owner_record()
    with _RUNS_LOCK:  # ended with its run (see _ENDED)
        _CLAIMED[token].add(json.loads(record)["nonce"])
    for _ in range(3):
        try:
            backend.put_new(key, record)
            return
        except FileExistsError:
            pass
        found = _read(backend, key)
        if found is None:  # released meanwhile
            continue
        holder = owner_state(found, token)
        if holder is not None and holder[1] is not False:
            raise Busy(holder[0])
        if _take_over(backend, key, found, record, token):
            return
    raise Busy("another process claimed it at the same moment")


def _read(backend: Backend, key: str) -> bytes | None:
    """The bytes of ``key``; None if it is not there, empty if it cannot be read (a link)."""
    try:
        return backend.read(key)
    except FileNotFoundError:
        return None
    except OSError:
        return b""


MAX_TAKERS = 3  # takers killed midway, one after another, before a claim gives up (Busy)


def marker_of(key: str, stale: bytes) -> str:
    """The name of the marker a taker of the stale bytes ``stale`` (a record or another taker's
    marker) of the record ``key`` creates: ``key.take-<16 hex digits of their hash>``."""
    return f"{key}.take-{hashlib.sha256(stale).hexdigest()[:16]}"


def _replace(backend: Backend, key: str, stale: bytes, record: bytes) -> bool:
    """:meth:`Backend.replace` of ``stale`` at ``key``; what could not be read (a link, read as
    empty by :func:`_read`) is replaced itself, never what it points to."""
    if stale == b"" and _read(backend, key) == b"":
        backend.put(key, record)
        return True
    return backend.replace(key, stale, record)


def _take_over(backend: Backend, key: str, stale: bytes, record: bytes, token: str) -> bool:
    """Replace the dead owner's record ``stale`` at ``key`` with ``record``, if this run is the
    one taker (it holds the marker of ``stale``) and ``stale`` is still there."""
    marker = marker_of(key, stale)
    if not _hold(backend, key, marker, record, token, MAX_TAKERS):
        return False
    if _read(backend, marker) != record:  # taken from this run: not this run's to delete
        return False
    try:
        return _replace(backend, key, stale, record)
    finally:
        backend.delete(marker)


def _hold(backend: Backend, key: str, marker: str, record: bytes, token: str, left: int) -> bool:
    """Make ``marker`` hold ``record``: create it, or take over the marker of a taker killed
    midway as a record is taken over (through the marker of *its* bytes: one taker wins it, then
    finds the dead marker still there before replacing it). Nothing is deleted on a read that
    may be stale: only a marker this run made and still holds."""
    try:
        backend.put_new(marker, record)
        return True
    except FileExistsError:
        pass
    found = _read(backend, marker)
    holder = None if found is None else owner_state(found, token)
    if found is None or left <= 1 or (holder is not None and holder[1] is not False):
        return False  # released meanwhile (the record changed), or a live taker
    inner = marker_of(key, found)
    if not _hold(backend, key, inner, record, token, left - 1):
        return False
    try:
        if _read(backend, inner) != record:
            return False
        return _replace(backend, marker, found, record)
    finally:
        if _read(backend, inner) == record:
            backend.delete(inner)
