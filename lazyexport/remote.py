"""Object storage: ``s3://``, ``gs://``, ``az://`` and ``http(s)://`` URLs as sources and outputs.

Every request goes through `obstore <https://developmentseed.org/obstore/>`_ (Rust's
``object_store``): its clients read the usual environment of each cloud (``AWS_*``,
``GOOGLE_*``, ``AZURE_*``), retry timeouts, 5xx and throttling responses with exponential
backoff, and upload large objects in parts. Zarr stores are read and written through
``zarr.storage.ObjectStore`` over the same clients.

A URL is carried through planning as a :class:`UrlPath`: a location of its own, not a pathlib
path (``parent``, ``name``, ``with_name`` and ``/`` work as for files, so templates and hidden
temporary names need no second implementation), made once from text in one spelling (``//``,
``.`` and ``..`` resolved), equal to every other spelling of the same location (scheme aliases
and case), and accepted by no file-system call - code that forgot a URL fails loudly instead of
writing a local directory named ``s3:``.

Storage options (``--storage-option key=value``, ``storage_options={...}``) are held for the
command that runs (:func:`options`); they may hold secrets, so they are never shown: messages
name the URL only (:func:`describe`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, cast

from .errors import ExportError

# URL schemes -> the cloud they name (obstore's own scheme table decides the client)
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

# option names as fsspec / s3fs users know them -> obstore's
_ALIASES = {
    "endpoint_url": "endpoint",
    "anon": "skip_signature",
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "region_name": "region",
}
# options lazyexport reads itself (the retry policy) and obstore's HTTP client options
_RETRY_OPTIONS = ("max_retries", "retry_timeout")
_CLIENT_OPTIONS = ("timeout", "connect_timeout", "allow_http", "allow_invalid_certificates")
DEFAULT_RETRIES = 10
DEFAULT_RETRY_TIMEOUT = 180.0  # seconds from the first attempt


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


def _url(value: object) -> UrlPath:
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


# -- storage options ---------------------------------------------------------------------------

_OPTIONS: dict[str, Any] = {}
_OPTIONS_LOCK = threading.Lock()


@contextlib.contextmanager
def options(values: Mapping[str, Any] | None) -> Iterator[None]:
    """Use ``values`` as the storage options of the stores opened meanwhile (one command)."""
    global _OPTIONS
    with _OPTIONS_LOCK:
        before, _OPTIONS = _OPTIONS, {**_OPTIONS, **normalize_options(values or {})}
    try:
        yield
    finally:
        with _OPTIONS_LOCK:
            _OPTIONS = before


def normalize_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options with fsspec's names mapped to obstore's and ``"true"``/``"false"`` as
    booleans."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        name = _ALIASES.get(str(name).lower(), str(name).lower())
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        out[name] = value
    return out


def parse_option(text: str) -> tuple[str, str]:
    """``key=value`` (``--storage-option``) as a pair. A malformed one is refused naming its key
    where that is a known option's name, never the rest (it may be a secret)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise StorageError(f"a storage option is key=value, got {_malformed(text)}")
    return name.strip(), value.strip()


# option names a message may show (any other text of a malformed option may be a secret)
_KNOWN_NAMES = {
    *_ALIASES,
    *_ALIASES.values(),
    *_RETRY_OPTIONS,
    *_CLIENT_OPTIONS,
    "virtual_hosted_style_request",
    "account_name",
    "account_key",
    "service_account",
    "service_account_key",
    "bucket",
}


def _malformed(text: str) -> str:
    key = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)(.*)$", text, re.DOTALL)
    if not text.strip().startswith("=") and key and key[1].lower() in _KNOWN_NAMES:
        if not key[2].strip():
            return f"{key[1]!r} (no '=' and no value)"
        return f"{key[1]!r} and then no '=' (the rest is not shown); write {key[1]}=VALUE"
    if text.strip().startswith("="):
        return "a value with no key before '=' (not shown)"
    return "a text without '=' (not shown: it may hold a secret)"


def without_values(text: str, values: Mapping[str, Any], quoted: bool = False) -> str:
    """``text`` (a message of obstore's) with every storage option's value in it named by its
    key instead: ``failed to parse "..." as Duration`` -> ``failed to parse the value of
    timeout as Duration``; with ``quoted``, any other quoted text too (obstore's configuration
    errors quote the value they could not use)."""
    for name, value in sorted(values.items(), key=lambda item: -len(str(item[1]))):
        if isinstance(value, bool):  # true/false: no secret, and "True" is in many messages
            continue
        shown = str(value)
        text = text.replace(f'"{shown}"', f"the value of {name}")
        if len(shown) >= 4:
            text = text.replace(shown, f"<the value of {name}>")
    return re.sub(r'"[^"]*"', "a value", text) if quoted else text


def _retry_config(values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        retries = int(values.get("max_retries", DEFAULT_RETRIES))
        timeout = float(values.get("retry_timeout", DEFAULT_RETRY_TIMEOUT))
    except (TypeError, ValueError):
        raise StorageError("max_retries is a whole number and retry_timeout seconds") from None
    return {
        "max_retries": retries,
        "retry_timeout": datetime.timedelta(seconds=timeout),
        "backoff": {
            "init_backoff": datetime.timedelta(milliseconds=100),
            "max_backoff": datetime.timedelta(seconds=15),
            "base": 2,
        },
    }


_ENVIRONMENT = ("AWS_", "GOOGLE_", "AZURE_")  # what the clients read: part of the cache key
_STORES: dict[tuple, Any] = {}
_STORES_LOCK = threading.Lock()


def current_options() -> dict[str, Any]:
    """The storage options in use now: what objects bound for cluster workers carry along."""
    with _OPTIONS_LOCK:
        return dict(_OPTIONS)


def store(root: str, values: Mapping[str, Any] | None = None) -> Any:
    """The obstore store of ``root`` (``scheme://bucket``, or a prefix below it), made once per
    process and option set; the client reads the cloud's environment, then the storage options
    (``values``, default :func:`current_options`)."""
    from obstore.store import from_url

    values = current_options() if values is None else dict(values)
    environment = {k: v for k, v in os.environ.items() if k.startswith(_ENVIRONMENT)}
    cache = (root, repr(sorted(values.items())), repr(sorted(environment.items())))
    with _STORES_LOCK:
        found = _STORES.get(cache)
    if found is not None:
        return found
    scheme = UrlPath(root).scheme
    client = {k: values[k] for k in _CLIENT_OPTIONS if k in values}
    if scheme == "http":
        client.setdefault("allow_http", True)
    config = {k: v for k, v in values.items() if k not in (*_RETRY_OPTIONS, *_CLIENT_OPTIONS)}
    if scheme in READ_ONLY:
        config = {}
    try:
        made = from_url(  # type: ignore[call-overload]
            root,
            config=config or None,
            client_options=client or None,
            retry_config=_retry_config(values),
        )
    except ExportError:
        raise
    except Exception as exc:  # obstore's configuration errors (they may quote a value)
        reason = without_values(_reason(exc), values, quoted=True)
        raise StorageError(f"cannot use {root}: {reason}") from None
    with _STORES_LOCK:
        _STORES[cache] = made
    return made


def zarr_store(
    url: PurePath | UrlPath, read_only: bool = True, values: Mapping | None = None
) -> Any:
    """``zarr.storage.ObjectStore`` rooted at ``url`` (it pickles with its client's
    configuration, so cluster workers reach the same store)."""
    url = _url(url)
    from zarr.storage import ObjectStore

    return ObjectStore(store(str(url), values), read_only=read_only)


# -- errors ------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A short, credential-free reason from an obstore error's text."""
    text = str(exc)
    for code, what in (
        ("NoSuchBucket", "no such bucket"),
        ("AccessDenied", "access denied"),
        ("InvalidAccessKeyId", "the access key is not known"),
        ("SignatureDoesNotMatch", "the secret key does not match"),
        ("Connection refused", "connection refused"),
        ("dns error", "the host name is not known"),
        ("timed out", "timed out"),
    ):
        if code.lower() in text.lower():
            return what
    status = re.search(r"status code: (\d{3}[^:<]*)", text)
    if status:
        return f"the server answered {status[1].strip()}"
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r"https?://\S+", "<url>", first)  # endpoints may hold credentials
    return first[:160]


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from obstore (a request that failed for good)."""
    module = type(exc).__module__ or ""
    return module.startswith("obstore") or (
        isinstance(exc, OSError) and "Error performing" in str(exc)
    )


def describe(exc: BaseException, url: str | PurePath, doing: str) -> StorageError:
    """``exc`` (from obstore) as one line naming ``url`` and what was being done."""
    reason = _reason(exc)
    hint = ""
    if reason in ("access denied", "the access key is not known", "the secret key does not match"):
        hint = "; check the credentials (environment or --storage-option)"
    elif reason in ("connection refused", "the host name is not known", "timed out"):
        hint = "; check the endpoint (AWS_ENDPOINT_URL or --storage-option endpoint=...)"
    reason = without_values(reason, current_options())
    return StorageError(f"cannot {doing} {url}: {reason}{hint}")


# -- objects -----------------------------------------------------------------------------------


def list_keys(url: PurePath | UrlPath, values: Mapping | None = None) -> list[str]:
    """Every key below ``url`` (a prefix), relative to it."""
    url = _url(url)
    import obstore

    prefix = url.key.rstrip("/") + "/" if url.key else ""
    found: list[str] = []
    for batch in obstore.list(store(url.root, values), prefix=prefix or None):
        found.extend(m["path"][len(prefix) :] for m in batch)
    return found


def exists(url: PurePath | UrlPath) -> bool:
    """Whether an object ``url`` exists, or any object below it (a store)."""
    url = _url(url)
    import obstore

    try:
        obstore.head(store(url.root), url.key)
        return True
    except FileNotFoundError:
        pass
    prefix = url.key.rstrip("/") + "/"
    for batch in obstore.list(store(url.root), prefix=prefix, chunk_size=1):
        if batch:
            return True
    return False


def delete_prefix(
    url: PurePath | UrlPath, include_self: bool = True, values: Mapping | None = None
) -> int:
    """Remove every object below ``url`` (and the object ``url`` itself); return how many."""
    url = _url(url)
    import obstore

    keys = [f"{url.key.rstrip('/')}/{k}" for k in list_keys(url, values)]
    if include_self:
        with contextlib.suppress(FileNotFoundError):
            obstore.head(store(url.root, values), url.key)
            keys.append(url.key)
    for start in range(0, len(keys), 1000):
        obstore.delete(store(url.root, values), keys[start : start + 1000])
    return len(keys)


def stamp(url: PurePath | UrlPath) -> tuple[int, str] | None:
    """Size and entity tag of the object ``url`` (None if there is none): changes when it is
    rewritten."""
    url = _url(url)
    import obstore

    try:
        meta = obstore.head(store(url.root), url.key)
    except FileNotFoundError:
        return None
    return int(meta["size"]), str(meta.get("e_tag") or meta.get("last_modified"))


def listing(url: PurePath | UrlPath) -> list[tuple[str, int, str]]:
    """(key, size, entity tag) of the object ``url``, or of every object below it; raises
    OSError if it cannot be listed."""
    url = _url(url)
    import obstore

    try:
        found = stamp(url)
        prefix = url.key.rstrip("/") + "/"
        objects = [
            (m["path"], int(m["size"]), str(m.get("e_tag") or m.get("last_modified")))
            for batch in obstore.list(store(url.root), prefix=prefix)
            for m in batch
        ]
    except Exception as exc:
        if is_storage_error(exc):
            raise OSError(str(describe(exc, str(url), "list"))) from None
        raise
    return ([(url.key, *found)] if found is not None else []) + sorted(objects)


def put_file(path: Path, url: PurePath | UrlPath) -> None:
    """Upload the local file ``path`` to ``url``: in parts when large; the object appears only
    when every part arrived."""
    url = _url(url)
    import obstore

    with open(path, "rb") as f:
        obstore.put(store(url.root), url.key, f)


def put_bytes(url: PurePath | UrlPath, data: bytes, values: Mapping | None = None) -> None:
    url = _url(url)
    import obstore

    obstore.put(store(url.root, values), url.key, data)


def get_bytes(url: PurePath | UrlPath, values: Mapping | None = None) -> bytes:
    url = _url(url)
    import obstore

    return bytes(obstore.get(store(url.root, values), url.key).bytes())


def copy(source: PurePath | UrlPath, target: PurePath | UrlPath) -> None:
    """Copy an object within one store (server-side)."""
    source = _url(source)
    target = _url(target)
    import obstore

    obstore.copy(store(source.root), source.key, target.key)


class RemoteFile:
    """A seekable, read-only file over an object (range requests, buffered by obstore), for
    readers that take a file object (h5py, tifffile). Picklable: reopened in each process."""

    def __init__(
        self, url: PurePath | UrlPath, buffer_size: int = 2**20, values: Mapping | None = None
    ):
        self.url, self.buffer_size = _url(url), buffer_size
        self.values = current_options() if values is None else dict(values)
        self._reader: Any = None

    def _file(self) -> Any:
        if self._reader is None:
            import obstore

            self._reader = obstore.open_reader(
                store(self.url.root, self.values), self.url.key, buffer_size=self.buffer_size
            )
        return self._reader

    def read(self, size: int = -1) -> bytes:
        return bytes(
            self._file().read(size) if size is not None and size >= 0 else self._file().read()
        )

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file().seek(offset, whence)

    def tell(self) -> int:
        return self._file().tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return int(self._file().size)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def closed(self) -> bool:
        return False

    def __getstate__(self) -> dict:
        return {"url": str(self.url), "buffer_size": self.buffer_size, "values": self.values}

    def __setstate__(self, state: dict) -> None:
        self.url, self.buffer_size = UrlPath(state["url"]), state["buffer_size"]
        self.values, self._reader = state["values"], None


# -- Zarr outputs: the metadata that makes them visible, held back until the commit ------------

METADATA_KEYS = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


def is_metadata(key: str) -> bool:
    return key.rpartition("/")[2] in METADATA_KEYS


def held_store(
    node: PurePath | UrlPath,
    held: PurePath | UrlPath,
    read_only: bool = False,
    values: Mapping | None = None,
) -> Any:
    """A Zarr store at ``node`` whose metadata documents are written to (and read first from)
    ``held`` instead: chunks land in their final place while nothing there is a Zarr node yet.
    :func:`publish` moves the metadata into place, root last."""
    node = _url(node)
    held = _url(held)
    from zarr.storage import WrapperStore

    class HeldMetadata(WrapperStore):
        def __init__(self, store: Any, side: Any) -> None:
            super().__init__(store)
            self._side = side

        def _with_store(self, store: Any) -> Any:
            return type(self)(store, self._side)

        async def get(self, key, prototype, byte_range=None):
            if is_metadata(key):
                found = await self._side.get(key, prototype, byte_range)
                if found is not None:
                    return found
            return await self._store.get(key, prototype, byte_range)

        async def exists(self, key: str) -> bool:
            if is_metadata(key) and await self._side.exists(key):
                return True
            return await self._store.exists(key)

        async def set(self, key, value) -> None:
            await (self._side if is_metadata(key) else self._store).set(key, value)

        async def set_if_not_exists(self, key, value) -> None:
            await (self._side if is_metadata(key) else self._store).set_if_not_exists(key, value)

        async def delete(self, key: str) -> None:
            await (self._side if is_metadata(key) else self._store).delete(key)

        async def list_dir(self, prefix: str):
            seen = set()
            for source in (self._side, self._store):
                async for name in source.list_dir(prefix):
                    if name not in seen:
                        seen.add(name)
                        yield name

    return HeldMetadata(zarr_store(node, read_only, values), zarr_store(held, read_only, values))


def publish(node: PurePath | UrlPath, held: PurePath | UrlPath) -> None:
    """Copy the metadata held at ``held`` into ``node``, deepest first and the node's own last
    (what makes the output visible is written once everything under it is there), then remove
    ``held``."""
    node = _url(node)
    held = _url(held)

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
    held = _url(held)
    node = _url(node)
    put_bytes(held / NODE_MARKER, str(node).encode())


def visible(node: PurePath | UrlPath) -> bool:
    """Whether a Zarr node is at ``node`` (its metadata is there)."""
    node = _url(node)
    return any(exists_object(node / key) for key in ("zarr.json", ".zarray", ".zgroup"))


def is_array(node: PurePath | UrlPath) -> bool:
    """Whether a Zarr array (v2 or v3) is at ``node``."""
    node = _url(node)
    if exists_object(node / ".zarray"):
        return True
    try:
        return json.loads(get_bytes(node / "zarr.json")).get("node_type") == "array"
    except (FileNotFoundError, ValueError):
        return False


def delete_object(url: PurePath | UrlPath) -> None:
    import obstore

    url = _url(url)
    with contextlib.suppress(FileNotFoundError):
        obstore.delete(store(url.root), url.key)


def exists_object(url: PurePath | UrlPath, values: Mapping | None = None) -> bool:
    url = _url(url)
    import obstore

    try:
        obstore.head(store(url.root, values), url.key)
        return True
    except FileNotFoundError:
        return False


def upload(files: Sequence[tuple[Path, PurePath | UrlPath]], token: str) -> list[Path]:
    """Upload local files to their URLs as one step. One file: a single put, which replaces an
    object atomically. Several: each to a hidden temporary key beside its final one, then a
    commit record listing them, then server-side copies into place - a run killed during the
    copies is finished by the next (:func:`finish_upload`)."""
    from .storage import temp_path, with_kind

    if len(files) == 1:
        ((local, final),) = files
        put_file(local, final)
        return [cast(Path, final)]
    renames = [(_url(temp_path(cast(Path, final), token)), _url(final)) for _, final in files]
    for (local, _), (temp, _) in zip(files, renames):
        put_file(local, temp)
    record = with_kind(cast(Path, renames[0][0]), "commit")
    put_bytes(record, json.dumps({"renames": [[str(t), str(f)] for t, f in renames]}).encode())
    return [cast(Path, f) for f in finish_upload(record)]


def finish_upload(record: PurePath | UrlPath) -> list[UrlPath]:
    """Copy each temporary of the commit ``record`` that is still there into place, remove it,
    then the record."""
    record = _url(record)
    import obstore

    data = json.loads(get_bytes(record))
    finals = []
    for temp, final in ((UrlPath(t), UrlPath(f)) for t, f in data["renames"]):
        finals.append(final)
        if exists_object(temp):
            copy(temp, final)
            obstore.delete(store(temp.root), temp.key)
    obstore.delete(store(record.root), record.key)
    return finals


OWNER = "owner"  # in a --resume export's held prefix: the process that runs it


def claim(held: PurePath | UrlPath, token: str) -> None:
    """Name this process as the runner of the ``--resume`` export whose held prefix is
    ``held``; raise :class:`lazyexport.storage.Busy` if a live process (or one on another host:
    nobody here can tell) runs it. Not atomic: two runs starting in the same instant may both
    claim it."""
    from .storage import Busy, _host_tag

    held = _url(held)
    state, who = _resume_state(held, token)
    if state != "orphan":
        raise Busy(who)
    text = {"pid": os.getpid(), "host": _host_tag(), "hostname": socket.gethostname()}
    put_bytes(held / OWNER, json.dumps(text).encode())


def release(held: PurePath | UrlPath) -> None:
    import obstore

    held = _url(held)
    with contextlib.suppress(FileNotFoundError):
        obstore.delete(store(held.root), (held / OWNER).key)


def _resume_state(held: UrlPath, token: str) -> tuple[str, str]:
    """Whether the ``--resume`` run of ``held`` runs: ("running" | "unknown" | "orphan", who)."""
    from .storage import _process_alive

    try:
        owner = json.loads(get_bytes(held / OWNER))
        pid, host = int(owner["pid"]), str(owner["host"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return "orphan", "no owner"
    alive = _process_alive(pid, host, token)
    who = f"pid {pid} on {owner.get('hostname', host)}"
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
    import obstore

    from .storage import _NAME, _state

    urls = [_url(u) for u in outputs]
    names = {u.name for u in urls}
    found: list[tuple[bool, UrlPath, str]] = []
    for parent in dict.fromkeys(_url(u.parent) for u in urls):
        prefix = parent.key.rstrip("/") + "/" if parent.key else None
        listing = obstore.list_with_delimiter(store(parent.root), prefix=prefix)
        entries = [p.rstrip("/") for p in listing["common_prefixes"]]
        entries += [o["path"] for o in listing["objects"]]
        for key in entries:
            name = key.rpartition("/")[2]
            match = _NAME.fullmatch(name)
            if not match or match["prefix"] not in names or match["token"] == keep:
                continue
            token = match["token"]
            resume = token.startswith("r") and match["kind"] == "tmp"
            state = _resume_state(parent / name, token) if resume else _state(token, {})
            if state[0] != "orphan":
                continue
            found.append((match["kind"] != "commit", parent / name, match["kind"]))
    done = []
    for _, url, kind in sorted(found, key=lambda f: f[0]):  # commit records first
        if kind == "commit":
            if exists_object(url):
                if not dry_run:
                    finish_upload(url)
                what = "to finish" if dry_run else "finished"
                done.append(f"{url} (an interrupted upload, {what})")
            continue
        if dry_run:
            if exists(url):
                done.append(f"{url} (a temporary output)")
            continue
        marker = url / NODE_MARKER
        if exists_object(marker):
            node = UrlPath(get_bytes(marker).decode())
            if not visible(node):
                delete_prefix(node)
        if delete_prefix(url):
            done.append(f"{url} (a temporary output)")
    return done
