"""URLs as locations: ``s3://``, ``gs://``, ``az://`` and ``http(s)://`` text made into a
:class:`UrlPath` once, where text becomes a location (:func:`as_path`).

A URL is carried through planning as a :class:`UrlPath`: a location of its own, not a pathlib
path (``parent``, ``name``, ``with_name`` and ``/`` work as for files, so templates and hidden
temporary names need no second implementation), made once from text in one spelling (``//``,
``.`` and ``..`` resolved), equal to every other spelling of the same location (scheme aliases
and case), and accepted by no file-system call - code that forgot a URL fails loudly instead of
writing a local directory named ``s3:``. Nothing here makes a request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, cast

from ..errors import ExportError

SCHEMES = {
    "s3": "S3",
    "s3a": "S3",
    "gs": "Google Cloud Storage",
    "gcs": "Google Cloud Storage",
    "az": "Azure",
    "azure": "Azure",
    "abfs": "Azure",
    "abfss": "Azure",
    "http": "HTTP",
    "https": "HTTP",
}
READ_ONLY = ("http", "https")
# aliases of one scheme -> the one spelling locations are compared in
_CANONICAL_SCHEME = {"s3a": "s3", "gcs": "gs", "azure": "az", "abfs": "az", "abfss": "az"}
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")


class StorageError(ExportError):
    """An object store refused or could not be reached: no such bucket, access denied, a bad
    endpoint, or a fault that outlasted the retries."""


class UrlPath:
    """A URL as a location: ``UrlPath("s3://bucket/dir/out.zarr").parent`` is ``s3://bucket/dir``.

    Not a path: no file-system call accepts it (``os.fspath``, ``Path(...)`` and ``open`` refuse
    it), and it has only the operations planning needs (``parent``, ``name``, ``suffix``,
    ``with_name``, ``/``, ``root``, ``key``), so code that forgot a URL fails loudly instead of
    writing a local directory named ``s3:``.

    Made once from text, in one spelling: the scheme lower-cased, empty segments (``//``) and
    ``.`` dropped, ``..`` taken back (refused above the bucket). Two spellings of one location
    are equal (``==``, ``hash``): the scheme's aliases (``s3a``, ``gcs``, ``azure``, ``abfs``)
    and the bucket's (host's) case do not count; it prints as it was given otherwise, so the
    client sees the scheme the user chose.
    """

    __slots__ = ("scheme", "bucket", "segments")
    scheme: str  # lower-cased
    bucket: str  # or host (HTTP)
    segments: tuple[str, ...]  # of the key: none empty, '.' or '..'

    def __init__(self, text: str | UrlPath) -> None:
        if isinstance(text, UrlPath):
            self.scheme, self.bucket, self.segments = text.scheme, text.bucket, text.segments
            return
        match = _URL.match(str(text))
        if match is None:
            raise StorageError(f"{text!r} is not a URL (scheme://bucket/key)")
        bucket, _, key = match["rest"].partition("/")
        if not bucket or bucket in (".", ".."):
            raise StorageError(f"{text!r} names no bucket")
        self.scheme = match["scheme"].lower()
        self.bucket = bucket
        self.segments = tuple(clean_segments(key.split("/"), f"{text!r}", "the bucket"))

    @classmethod
    def _made(cls, scheme: str, bucket: str, segments: Sequence[str]) -> UrlPath:
        made = cls.__new__(cls)
        made.scheme, made.bucket, made.segments = scheme, bucket, tuple(segments)
        return made

    def __str__(self) -> str:
        return "/".join((f"{self.scheme}://{self.bucket}", *self.segments))

    def __repr__(self) -> str:
        return f"UrlPath({str(self)!r})"

    def __reduce__(self) -> tuple:
        return (UrlPath, (str(self),))

    @property
    def canonical(self) -> tuple[str, ...]:
        """The location as one tuple: scheme aliases mapped, the bucket (host) lower-cased
        (Azure's ``container@account...``: the container)."""
        scheme = _CANONICAL_SCHEME.get(self.scheme, self.scheme)
        bucket = self.bucket.lower()
        if scheme == "az":
            bucket = bucket.partition("@")[0]
        return (scheme, bucket, *self.segments)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlPath) and self.canonical == other.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __lt__(self, other: UrlPath) -> bool:
        return self.canonical < other.canonical

    @property
    def root(self) -> str:
        """``scheme://bucket`` (for HTTP: ``scheme://host``)."""
        return f"{self.scheme}://{self.bucket}"

    @property
    def key(self) -> str:
        """The path below the bucket (no leading slash; empty for the bucket itself)."""
        return "/".join(self.segments)

    @property
    def parts(self) -> tuple[str, ...]:
        """``("s3:", bucket, *segments)``, as a pure path's parts of ``s3:/bucket/...``."""
        return (f"{self.scheme}:", self.bucket, *self.segments)

    @property
    def name(self) -> str:
        return self.segments[-1] if self.segments else ""

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix if self.name else ""

    @property
    def suffixes(self) -> list[str]:
        return PurePosixPath(self.name).suffixes if self.name else []

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem if self.name else ""

    @property
    def parent(self) -> UrlPath:
        return self._made(self.scheme, self.bucket, self.segments[:-1])

    @property
    def parents(self) -> tuple[UrlPath, ...]:
        return tuple(
            self._made(self.scheme, self.bucket, self.segments[:i])
            for i in range(len(self.segments) - 1, -1, -1)
        )

    def absolute(self) -> UrlPath:
        """A URL names its place from any working directory already (as ``Path.absolute``)."""
        return self

    def with_name(self, name: str) -> UrlPath:
        if not self.segments:
            raise ValueError(f"{self} has an empty name")
        return self.parent / name

    def joinpath(self, *others: str | PurePath) -> UrlPath:
        segments = [*self.segments]
        for other in others:
            if isinstance(other, UrlPath) or is_url(str(other)):
                raise TypeError(f"cannot join the URL {other} below {self}")
            segments += str(other).split("/")
        return self._made(
            self.scheme, self.bucket, clean_segments(segments, f"{self} / {others}", "the bucket")
        )

    def __truediv__(self, other: str | PurePath) -> UrlPath:
        return self.joinpath(other)

    def relative_to(self, other: UrlPath) -> PurePosixPath:
        if other not in (self, *self.parents):
            raise ValueError(f"{self} is not below {other}")
        return PurePosixPath(*self.segments[len(other.segments) :])


def clean_segments(segments: Sequence[str], what: str, top: str) -> list[str]:
    """Path segments in one spelling: empty ones (``a//b``, a trailing ``/``) and ``.`` dropped,
    ``..`` taking back the segment before it; a ``..`` above the first segment is refused
    (``top`` names where that would go: the bucket, the container)."""
    kept: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not kept:
                raise StorageError(f"{what}: '..' goes above {top}")
            kept.pop()
        else:
            kept.append(segment)
    return kept


def as_url(value: object) -> UrlPath:
    if not isinstance(value, UrlPath):
        raise TypeError(f"not a URL: {value!r}")
    return value


def is_url(value: Any) -> bool:
    """Whether ``value`` is a URL of a scheme lazyexport reads or writes."""
    if isinstance(value, UrlPath):
        return True
    if not isinstance(value, str):
        return False
    match = _URL.match(value)
    return match is not None and match["scheme"].lower() in SCHEMES


def url_scheme(value: str) -> str | None:
    """The scheme of a ``scheme://`` string (known or not), else None."""
    match = _URL.match(value)
    return match["scheme"].lower() if match else None


def as_path(value: Any) -> Path:
    """``value`` as a :class:`UrlPath` if it is a URL, else as a :class:`pathlib.Path`: where
    text becomes a location. Refuses a URL of a scheme that is not supported (it would otherwise
    become a local directory) and one that names no bucket; ``file://`` URLs are local paths
    (:func:`local_text`).

    Typed as a Path: outputs are Paths throughout planning, and a UrlPath stands in for one
    where only its few operations apply; file-system calls check :func:`is_url` first (and a
    UrlPath has none of them, so one that forgot fails loudly)."""
    if isinstance(value, (UrlPath, Path)):
        return cast(Path, value)
    text = str(value)
    if is_url(text):
        return cast(Path, UrlPath(text))
    return Path(local_text(text))


def local_text(text: str) -> str:
    """``text`` as a local path: a ``file://`` URL's path (``file:///abs/path``,
    ``file://localhost/abs/path``); refuses another host and a scheme lazyexport does not know.
    Text without a scheme is returned as it is."""
    scheme = url_scheme(text)
    if scheme is None:
        return text
    if scheme != "file":
        if is_url(text):
            raise StorageError(f"{text!r} is a URL, not a local path")
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise StorageError(f"unknown URL scheme {scheme}:// in {text!r} (known: {known}, file://)")
    host, slash, path = text.split("://", 1)[1].partition("/")
    if host not in ("", "localhost") or not slash:
        raise StorageError(
            f"{text!r}: a file:// URL names a local path, file:///absolute/path (no host)"
        )
    return "/" + path
