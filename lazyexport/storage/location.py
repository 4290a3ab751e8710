"""Where a source or an output is, compared in one canonical form: "does the output hold the
source?" asked once, here.

A *node* is a file or store (a local :class:`pathlib.Path` or a :class:`~lazyexport.remote.UrlPath`)
plus the path inside it (``out.h5/group/data``, ``store.zarr/raw``). Invariants:

- Two spellings of one location are the same location: URLs are compared in
  :attr:`UrlPath.canonical <lazyexport.remote.UrlPath.canonical>` (scheme aliases and case,
  ``//``, ``.``, ``..``); local paths by what the file system says (symlinks resolved, and an
  existing file or directory by device and inode, so hard links and bind mounts count too).
- A path inside a container is one spelling too (:func:`internal_path`): ``a//b``, ``a/./b`` and
  ``x/../b`` are ``a/b`` and ``b``; a ``..`` above the container is refused, never written.
- A local path and a URL are never the same location.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any

from .urls import UrlPath, clean_segments, is_url

Node = tuple[Any, tuple[str, ...]]  # (Path or UrlPath, the path inside it as segments)


def internal_path(text: str, container: object) -> str:
    """The path inside ``container`` in one spelling (see the module docs); raises
    :class:`~lazyexport.remote.StorageError` for a ``..`` above the container."""
    where = f"{container}/{text.strip('/')}"
    return "/".join(clean_segments(text.split("/"), repr(where), f"{container}"))


def canonical(path: Any) -> Any:
    """One spelling of ``path``: a URL's canonical tuple, or a local path with its symlinks
    resolved (what does not exist yet: taken as written below what does)."""
    if is_url(path):
        return ("url", *UrlPath(str(path) if not isinstance(path, UrlPath) else path).canonical)
    return Path(path).resolve()


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` (paths or URLs) are one location."""
    if is_url(a) or is_url(b):
        return is_url(a) and is_url(b) and canonical(a) == canonical(b)
    first, second = canonical(a), canonical(b)
    if first == second:
        return True
    stats = _stat(first), _stat(second)
    return None not in stats and os.path.samestat(*stats)  # type: ignore[arg-type]


def below(inner: Any, outer: Any) -> bool:
    """Whether the location ``inner`` lies below ``outer`` (deeper, not the same)."""
    if is_url(inner) or is_url(outer):
        if not (is_url(inner) and is_url(outer)):
            return False
        a, b = canonical(inner), canonical(outer)
        return len(a) > len(b) and a[: len(b)] == b
    inner_path, outer_path = canonical(inner), canonical(outer)
    if outer_path in inner_path.parents:
        return True
    found = _stat(outer_path)
    if found is None:  # what does not exist holds nothing
        return False
    return any(
        (up := _stat(parent)) is not None and os.path.samestat(up, found)
        for parent in inner_path.parents
    )


def node(file: Any, internal: str) -> Node:
    """The node ``file``/``internal``, its inner path in one spelling."""
    return file, tuple(s for s in internal_path(internal, file).split("/") if s)


def inside(inner: Node, outer: Node) -> bool:
    """Whether node ``inner`` lies inside node ``outer`` (in the same file: deeper; else in a
    file or store below the whole of ``outer``)."""
    (inner_file, inner_path), (outer_file, outer_path) = inner, outer
    if same(inner_file, outer_file):
        return len(inner_path) > len(outer_path) and inner_path[: len(outer_path)] == outer_path
    return not outer_path and below(inner_file, outer_file)


def holds(output: tuple[Any, str], source: tuple[Any, str]) -> bool:
    """Whether the output node (file or store, path inside) is the source node or holds it."""
    out, src = node(*output), node(*source)
    return is_same_node(out, src) or inside(src, out)


def is_same_node(a: Node, b: Node) -> bool:
    return a[1] == b[1] and same(a[0], b[0])


def shown(path: PurePath | UrlPath, internal: str) -> str:
    return f"{path}/{internal.strip('/')}" if internal.strip("/") else str(path)
