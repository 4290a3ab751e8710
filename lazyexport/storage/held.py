"""Object-store outputs under way: Zarr metadata held back until the commit, multi-object
uploads committed through a record, the ``--resume`` owner claim, and what killed exports left.

Invariants: a Zarr output becomes visible only when :func:`publish` copies its metadata into
place, root last; a commit record lists every copy still to do, so a killed upload is finished
by whoever finds it (:func:`finish_upload`); only runs of this host that no process runs any
more are cleaned (:func:`clean_beside`); the owner record of a ``--resume`` export is created
with a conditional put (:func:`claim`), so of two runs claiming at once exactly one wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, cast

from .local import NAME, state_of, temp_path, with_kind
from .objects import (
    copy,
    delete_object,
    delete_prefix,
    exists,
    exists_object,
    get_bytes,
    is_metadata,
    list_dir,
    list_keys,
    put_bytes,
    put_file,
    zarr_store,
)
from .owners import claim as claim_owners
from .owners import release as release_owners
from .runs import owner_state
from .stores import ObjectBackend
from .urls import StorageError, UrlPath, as_url

# -- Zarr outputs: the metadata that makes them visible, held back until the commit ------------


def held_store(
    node: PurePath | UrlPath,
    held: PurePath | UrlPath,
    read_only: bool = False,
    values: Mapping | None = None,
) -> Any:
    """A Zarr store at ``node`` whose metadata documents are written to (and read first from)
    ``held`` instead: chunks land in their final place while nothing there is a Zarr node yet.
    :func:`publish` moves the metadata into place, root last."""
    node = as_url(node)
    held = as_url(held)
    from .zarrheld import HeldMetadata

    return HeldMetadata(zarr_store(node, read_only, values), zarr_store(held, read_only, values))


def publish(node: PurePath | UrlPath, held: PurePath | UrlPath) -> None:
    """Copy the metadata held at ``held`` into ``node``, deepest first and the node's own last
    (what makes the output visible is written once everything under it is there), then remove
    ``held``."""
    node = as_url(node)
    held = as_url(held)

    def order(key: str) -> tuple:
        name = key.rpartition("/")[2]
        return (-key.count("/"), name in ("zarr.json", ".zarray", ".zgroup"), key)

    keys = sorted(list_keys(held), key=order)
    if not any(k.rpartition("/")[2] in ("zarr.json", ".zarray", ".zgroup") for k in keys):
        raise StorageError(
            f"the metadata of {node} held at {held} is gone (another export of the same output "
            "removed it?); nothing was made visible, export again"
        )
    for key in keys:
        if is_metadata(key):
            put_bytes(node / key, get_bytes(held / key))
    delete_prefix(held)


# -- committing uploads, and what killed exports left in a store --------------------------------

NODE_MARKER = ".lazyexport-node"  # in a held-metadata prefix: the URL of the node it belongs to


def mark_node(held: PurePath | UrlPath, node: PurePath | UrlPath) -> None:
    """Record, before anything else is written, which node the held metadata ``held`` is for:
    whoever finds it orphaned removes the node's chunks too (unless the node became visible)."""
    held = as_url(held)
    node = as_url(node)
    put_bytes(held / NODE_MARKER, str(node).encode())


def visible(node: PurePath | UrlPath) -> bool:
    """Whether a Zarr node is at ``node`` (its metadata is there)."""
    node = as_url(node)
    return any(exists_object(node / key) for key in ("zarr.json", ".zarray", ".zgroup"))


def is_array(node: PurePath | UrlPath) -> bool:
    """Whether a Zarr array (v2 or v3) is at ``node``."""
    node = as_url(node)
    if exists_object(node / ".zarray"):
        return True
    try:
        return json.loads(get_bytes(node / "zarr.json")).get("node_type") == "array"
    except (FileNotFoundError, ValueError):
        return False


def upload(files: Sequence[tuple[Path, PurePath | UrlPath]], token: str) -> list[Path]:
    """Upload local files to their URLs as one step. One file: a single put, which replaces an
    object atomically. Several: each to a hidden temporary key beside its final one, then a
    commit record listing them, then server-side copies into place - a run killed during the
    copies is finished by the next (:func:`finish_upload`)."""
    if len(files) == 1:
        ((local, final),) = files
        put_file(local, final)
        return [cast(Path, final)]
    renames = [(as_url(temp_path(cast(Path, final), token)), as_url(final)) for _, final in files]
    for (local, _), (temp, _) in zip(files, renames):
        put_file(local, temp)
    record = with_kind(cast(Path, renames[0][0]), "commit")
    put_bytes(record, json.dumps({"renames": [[str(t), str(f)] for t, f in renames]}).encode())
    return [cast(Path, f) for f in finish_upload(record)]


def finish_upload(record: PurePath | UrlPath) -> list[UrlPath]:
    """Copy each temporary of the commit ``record`` that is still there into place, remove it,
    then the record."""
    record = as_url(record)
    data = json.loads(get_bytes(record))
    finals = []
    for temp, final in ((UrlPath(t), UrlPath(f)) for t, f in data["renames"]):
        finals.append(final)
        if exists_object(temp):
            copy(temp, final)
            delete_object(temp)
    delete_object(record)
    return finals


OWNER = "owner"  # in a --resume export's held prefix: the process that runs it


def claim(held: PurePath | UrlPath, token: str) -> None:
    """Name this process as the runner of the ``--resume`` export whose held prefix is
    ``held``; raise :class:`lazyexport.storage.Busy` if a live process (or one on another host:
    nobody here can tell) runs it. Atomic: the owner record is created with a conditional put
    (:func:`~lazyexport.storage.runs.claim_key`), so of runs starting at once exactly one wins."""
    claim_owners([as_url(held) / OWNER], token)


def holds_run_state(held: PurePath | UrlPath) -> bool:
    """Whether the held prefix ``held`` keeps what a run left to continue or finish (held
    metadata, a journal, recorded uploads), not only a live run's owner record and the markers
    of taking one over."""
    backend = ObjectBackend.at(as_url(held))
    return any(k != OWNER and not k.startswith(f"{OWNER}.take-") for k in backend.list())


def release(held: PurePath | UrlPath) -> None:
    release_owners([as_url(held) / OWNER])


def _resume_state(held: UrlPath, token: str) -> tuple[str, str]:
    """Whether the ``--resume`` run of ``held`` runs: ("running" | "unknown" | "orphan", who)."""
    try:
        holder = owner_state(get_bytes(held / OWNER), token)
    except FileNotFoundError:
        holder = None
    if holder is None:
        return "orphan", "no owner"
    who, alive = holder
    if alive is None:
        return "unknown", who
    return ("running" if alive else "orphan"), who


def clean_beside(
    outputs: Sequence[PurePath | UrlPath], keep: str | None = None, dry_run: bool = False
) -> list[str]:
    """Remove what killed exports left beside ``outputs`` in their store (runs of this host that
    no process runs any more): finish their interrupted upload commits, remove their temporary
    objects, and a Zarr output's chunks whose metadata never landed. Returns what was done
    (with ``dry_run``: what would be, doing nothing)."""
    found = sorted(_orphans([as_url(u) for u in outputs], keep), key=lambda f: f[1] != "commit")
    done = [_clean_one(url, kind, dry_run) for url, kind in found]  # commit records first
    return [d for d in done if d is not None]


def _orphans(urls: Sequence[UrlPath], keep: str | None) -> list[tuple[UrlPath, str]]:
    """The hidden objects of runs no process runs any more beside ``urls`` (but ``keep``'s),
    with their kinds."""
    return [(url, kind) for url, kind, state in _runs_beside(urls, keep) if state == "orphan"]


def running_beside(outputs: Sequence[PurePath | UrlPath], keep: str | None) -> list[UrlPath]:
    """The held outputs beside ``outputs`` that a live process of this host writes now (but
    ``keep``'s run's). An object store has no rename, so two runs writing one output would mix
    their chunks in place: a run that finds one must not start."""
    found = _runs_beside([as_url(u) for u in outputs], keep)
    return [url for url, kind, state in found if kind == "tmp" and state == "running"]


def _runs_beside(urls: Sequence[UrlPath], keep: str | None) -> Iterator[tuple[UrlPath, str, str]]:
    """The hidden objects of other runs beside ``urls`` (but ``keep``'s), each with its kind and
    whether its run runs ("running", "unknown" or "orphan")."""
    names = {u.name for u in urls}
    for parent in dict.fromkeys(u.parent for u in urls):
        for name in list_dir(parent):
            match = NAME.fullmatch(name)
            if not match or match["prefix"] not in names or match["token"] == keep:
                continue
            token, kind = match["token"], match["kind"]
            if token.startswith("r") and kind in ("tmp", "lazy"):  # its held prefix's owner
                held = parent / f".{match['prefix']}.lazyexport-{token}.tmp"
                state = _resume_state(held, token)
            else:
                state = state_of(token, {})
            yield parent / name, kind, state[0]


def _clean_one(url: UrlPath, kind: str, dry_run: bool) -> str | None:
    """Finish (a commit record) or remove one orphan; what was (or would be) done, if anything."""
    if kind == "commit":
        if not exists_object(url):
            return None
        if not dry_run:
            finish_upload(url)
        return f"{url} (an interrupted upload, {'to finish' if dry_run else 'finished'})"
    if dry_run:
        return f"{url} (a temporary output)" if exists(url) else None
    marker = url / NODE_MARKER
    if exists_object(marker):
        node = UrlPath(get_bytes(marker).decode())
        if not visible(node):
            delete_prefix(node)
    return f"{url} (a temporary output)" if delete_prefix(url) else None
