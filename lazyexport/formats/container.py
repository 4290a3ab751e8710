"""Directory containers (Zarr, N5, OME-Zarr): one output node inside a store that may hold others.

An output ``a.zarr/export`` names the node ``export`` of the container ``a.zarr``. Where the
container does not exist yet, the export writes a whole new container under a temporary name
and renames it into place. Where it exists, only the node is written: under a temporary name
beside the container, moved into it on commit (after the parent groups exist), so an existing
``export`` node is replaced as a whole and nothing else in the store - the source among it,
``raw`` or ``labels`` - is touched. Deleting an output removes only its node, and the container
only when nothing but the groups leading to the node is left in it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import zarr

from .. import remote
from ..errors import FormatError
from ..storage import paths, remove, temp_path
from ..storage.capabilities import can_rename, removed_by_prefix
from .base import Writer
from .spec import OutputSpec


@dataclasses.dataclass(frozen=True)
class Layout:
    """What makes a directory a node of one container format."""

    kind: str  # "Zarr", "N5"
    group_files: tuple[str, ...]  # metadata files a group may hold
    node_files: tuple[str, ...]  # metadata files of which a node (array or group) has one
    # (directory) -> whether the node there is an array (or dataset)
    array_test: Callable[[Path], bool]
    root_metadata: bool  # a store's root always has a group file (N5: only by convention)


def _zarr_array(node: Path) -> bool:
    if paths.present(node / ".zarray"):
        return True
    root = paths.read_json(node / "zarr.json")
    return root is not None and root.get("node_type") == "array"


def _n5_dataset(node: Path) -> bool:
    attributes = paths.read_json(node / "attributes.json")
    return attributes is not None and "dimensions" in attributes


ZARR = Layout(
    "Zarr",
    ("zarr.json", ".zgroup", ".zattrs"),
    ("zarr.json", ".zgroup", ".zarray"),
    _zarr_array,
    root_metadata=True,
)
N5 = Layout("N5", ("attributes.json",), ("attributes.json",), _n5_dataset, root_metadata=False)


def zarr_format_of(container: Path) -> int | None:
    """The Zarr format of an existing store's root (None: no root metadata)."""
    if exists(container / "zarr.json"):
        return 3
    if exists(container / ".zgroup") or exists(container / ".zarray"):
        return 2
    return None


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one export writes: ``temp`` (renamed to ``final`` on commit), the node's path
    inside ``temp`` ("" where ``temp`` is the node itself), and the existing container ``store``
    the node is moved into (None where ``temp`` is the whole container)."""

    final: Path
    temp: Path
    internal: str
    store: Path | None = None


def exists(path: Path) -> bool:
    """Whether ``path`` (a file, a directory, or at a URL: an object or any object below it)
    exists."""
    return paths.exists(path)


def node_exists(path: Path) -> bool:
    """Whether a node is at ``path``: a file or directory, or at a URL a Zarr node (its
    metadata: chunks alone, of an export under way, are not one)."""
    return paths.node_exists(path)


def node_path(container: Path, internal: str) -> Path:
    internal = internal.strip("/")
    return container / internal if internal else container


def in_existing(container: Path, internal: str) -> bool:
    """Whether the output is a node of a container that exists already."""
    return bool(internal.strip("/")) and paths.store_exists(container)


def place(container: Path, internal: str, token: str) -> Placement:
    """Where an export of ``container``/``internal`` writes (see :class:`Placement`). At a URL
    there is no rename: ``final`` is where the chunks go, ``temp`` where the metadata is held
    until the commit (see :mod:`lazyexport.remote`)."""
    internal = internal.strip("/")
    if not can_rename(container):
        held = temp_path(container, token)
        spot = (
            Placement(container / internal, held, "", container)
            if in_existing(container, internal)
            else Placement(container, held, internal)
        )
        remote.mark_node(held, spot.final)
        return spot
    container.parent.mkdir(parents=True, exist_ok=True)
    if in_existing(container, internal):  # beside the store itself, on its file system
        return Placement(container / internal, temp_path(container.resolve(), token), "", container)
    return Placement(container, temp_path(container, token), internal)


def settle(target, node: str) -> None:
    """At commit: where the container appeared while the export ran (another export created
    it), move only the node ``node`` of the temporary container into it, as if the container
    had existed from the start; the rest of the temporary container is removed afterwards.
    ``target`` is a :class:`~lazyexport.formats.base.Target` with an ``into`` attribute."""
    ((final, temp),) = target.temps.items()
    if target.into is not None or not node or not final.is_dir():
        return
    target.scratch.append(temp)
    target.temps = {final / node: temp / node}
    target.into = final


def consolidated(store: Path) -> bool:
    """Whether a Zarr store keeps consolidated metadata (which must then list a new node)."""
    if paths.present(store / ".zmetadata"):
        return True
    root = paths.read_json(store / "zarr.json")
    return root is not None and root.get("consolidated_metadata") is not None


def check(layout: Layout, container: Path, internal: str) -> None:
    """Refuse, before anything is computed, an output the container cannot take: a node inside
    a file, inside an array, or in a directory that is not a container of this format."""
    internal = internal.strip("/")
    if not internal or not paths.exists(container):
        return
    if paths.file_in_the_way(container):
        raise FormatError(
            f"{container} is a file, not a {layout.kind} store, so it cannot hold {internal!r}; "
            f"choose another output"
        )
    parts = internal.split("/")
    for depth in range(len(parts)):
        node = container.joinpath(*parts[:depth])
        if layout.array_test(node):
            inside = "/".join(parts[:depth]) or "its root"
            raise FormatError(
                f"{container} holds an array at {inside}, which cannot hold {internal!r}; "
                f"choose another output"
            )
    if (
        layout.root_metadata
        and paths.occupied_directory(container, follow_links=True)
        and not any(paths.present(container / f) for f in layout.group_files)
    ):
        raise FormatError(
            f"{container} is a directory but not a {layout.kind} store; choose another output"
        )


def foreign(layout: Layout, container: Path, internal: str) -> tuple[Path, str] | None:
    """The output node (or whole store) if it is a local directory that holds something but
    no metadata of ``layout`` (what lazyexport did not write), and what it is. (A file there is
    an output in the way, replaced with ``overwrite`` as a file output would be.)"""
    if not can_rename(container):  # refused where it is written (no rename replaces it there)
        return None
    node = node_path(container, internal) if in_existing(container, internal) else container
    if paths.occupied_directory(node, follow_links=True) and not any(
        paths.present(node / f) for f in layout.node_files
    ):
        return node, f"a directory without {layout.kind} metadata"
    return None


def existing(container: Path, internal: str) -> list[Path]:
    """The output node if it exists (the whole container where it is the output)."""
    if in_existing(container, internal):
        node = node_path(container, internal)
        return [node] if node_exists(node) else []
    return [container] if node_exists(container) else []


def delete(layout: Layout, container: Path, internal: str, dry_run: bool = False) -> list[str]:
    """Remove the output node; the container too if nothing but the groups leading to the node
    would be left. Returns what was (or would be) removed."""
    found = existing(container, internal)
    if not found:
        return []
    if removed_by_prefix(container):  # exactly the keys below the node (or the whole store)
        if not dry_run:
            remote.delete_prefix(found[0])
            if found[0] != container:
                relist(container)
        return [str(found[0])]
    if not in_existing(container, internal):
        if not dry_run:
            remove(container)
        return [str(container)]
    node = found[0]
    others = _other_content(layout, container, internal)
    if not dry_run:
        remove(node)
        if not others:
            remove(container)
        else:
            relist(container)
    if others:
        return [f"{node} (only this node: the store holds other data too)"]
    return [str(container)]


def relist(store: Path) -> None:
    """Rewrite a Zarr store's consolidated metadata, where it keeps one, after a node in it was
    removed: the listing must not name the node any more (as an export's commit rewrites it to
    name a new one). Nothing for stores without it (and N5, which has none)."""
    if consolidated(store):
        zarr.consolidate_metadata(paths.zarr_location(store))


def _other_content(layout: Layout, container: Path, internal: str) -> bool:
    """Whether ``container`` holds anything besides the node ``internal`` and the group
    metadata of the groups leading to it."""
    parts = internal.strip("/").split("/")
    groups = {container.joinpath(*parts[:d]) for d in range(len(parts))}
    node = container.joinpath(*parts)
    for group in groups:
        for entry in group.iterdir():
            if entry == node or entry in groups:
                continue
            if entry.name in layout.group_files and entry.is_file():
                continue
            return True
    return False


class ContainerWriter(Writer):
    """A writer whose output is a node of a directory container of ``layout``: checked,
    found and deleted as a node (see the module docs)."""

    layout: ClassVar[Layout]

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        check(self.layout, spec.output, spec.internal)
        return super().check(spec)

    def foreign(self, spec: OutputSpec) -> tuple[Path, str] | None:
        return foreign(self.layout, spec.output, spec.internal)

    def existing(self, spec: OutputSpec) -> list[Path]:
        return existing(spec.output, spec.internal)

    def delete(self, spec: OutputSpec, dry_run: bool = False) -> list[str]:
        self.refuse_foreign(spec)
        return delete(self.layout, spec.output, spec.internal, dry_run)
