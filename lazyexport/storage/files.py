"""Local files as a :class:`~lazyexport.storage.backend.Backend`: a key is a path below a root
directory.

Invariants: nothing is written, read or deleted through a symbolic link found at a key (a link is
itself the entry removed, never what it points to); :meth:`FileBackend.put` writes a unique
temporary beside the key and renames it into place; :meth:`FileBackend.put_new` writes a unique
temporary and hard-links it to the key (``link`` fails if anything is there, so the key appears
atomically and with all of its bytes: a reader never finds a created but empty record; on a file
system without hard links it is created with ``O_EXCL`` and then written).

A log (a resume journal) is one file: its header on the first line, then one line per record,
each appended (``O_APPEND | O_NOFOLLOW``, never through a link) and fsynced before
:meth:`FileBackend.add_to_log` returns; appends of one short line do not interleave, so threads
may add at once. A last line without its newline (a kill in the middle of an append) is not read,
and :meth:`FileBackend.start_log` rewrites the whole file in one step (:meth:`FileBackend.put`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from .backend import RECORD, Backend, check_record

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FileBackend(Backend):
    """The files below the directory ``root``."""

    renames = True
    directories = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileBackend({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"not a key: {key!r}")
        return self.root.joinpath(*parts)

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._path(key))

    def list(self, prefix: str = "") -> list[str]:
        found = []
        for directory, dirs, files in os.walk(self.root):  # never into a linked directory
            below = Path(directory).relative_to(self.root).as_posix()
            base = "" if below == "." else below + "/"
            links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
            found += [base + name for name in (*files, *links) if (base + name).startswith(prefix)]
        return sorted(found)

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        fd = os.open(self._path(key), os.O_RDONLY | NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            f.seek(start or 0)
            return f.read() if end is None else f.read(max(0, end - (start or 0)))

    def _temporary(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(temp)
            raise
        return temp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(self._temporary(path, data), path)

    def put_new(self, key: str, data: bytes) -> None:
        path = self._path(key)
        temp = self._temporary(path, data)
        try:
            os.link(temp, path, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: create exclusively, then write
            self._create_exclusively(path, data)
        finally:
            os.unlink(temp)

    def _create_exclusively(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def file_path(self, key: str) -> Path:
        return self._path(key)

    def start_log(self, key: str, header: str, records: Iterable[str] = ()) -> None:
        if "\n" in header:
            raise ValueError("a log header is one line")
        lines = [header, *(check_record(r) for r in records)]
        self.put(key, "".join(f"{line}\n" for line in lines).encode())

    def add_to_log(self, key: str, record: str) -> None:
        line = f"{check_record(record)}\n".encode()
        fd = os.open(self._path(key), os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_log(self, key: str) -> tuple[str | None, tuple[str, ...]]:
        try:
            lines = self.read(key).decode(errors="replace").split("\n")
        except FileNotFoundError:
            return None, ()
        if len(lines) < 2:  # not even the header's line whole
            return None, ()
        # the last part is "" or an interrupted line
        return lines[0], tuple(r for r in lines[1:-1] if RECORD.fullmatch(r))

    def delete_log(self, key: str) -> None:
        self.delete(key)
