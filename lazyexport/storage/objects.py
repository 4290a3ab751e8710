"""Object storage: requests to ``s3://``, ``gs://``, ``az://`` and ``http(s)://`` stores.

Every request goes through `obstore <https://developmentseed.org/obstore/>`_ (Rust's
``object_store``), imported nowhere outside this package: its clients read the usual
environment of each cloud (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``), retry timeouts, 5xx and
throttling responses with exponential backoff, and upload large objects in parts. Zarr stores
are read and written through ``zarr.storage.ObjectStore`` over the same clients.

Storage options (``--storage-option key=value``, ``storage_options={...}``) are held for the
command that runs (:func:`options`); they may hold secrets, so they are never shown: messages
name the URL only (:func:`describe`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

from ..errors import ExportError
from .local import CONTAINER_MARKERS
from .urls import READ_ONLY, StorageError, UrlPath, as_url

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
    url = as_url(url)
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


METADATA_KEYS = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


def is_metadata(key: str) -> bool:
    """Whether ``key`` names a Zarr metadata document (v2 or v3)."""
    return key.rpartition("/")[2] in METADATA_KEYS


def list_keys(url: PurePath | UrlPath, values: Mapping | None = None) -> list[str]:
    """Every key below ``url`` (a prefix), relative to it."""
    url = as_url(url)
    import obstore

    prefix = url.key.rstrip("/") + "/" if url.key else ""
    found: list[str] = []
    for batch in obstore.list(store(url.root, values), prefix=prefix or None):
        found.extend(m["path"][len(prefix) :] for m in batch)
    return found


def list_dir(url: PurePath | UrlPath) -> list[str]:
    """The names directly below ``url``: its objects' and its common prefixes' (one level)."""
    url = as_url(url)
    import obstore

    prefix = url.key.rstrip("/") + "/" if url.key else None
    listing = obstore.list_with_delimiter(store(url.root), prefix=prefix)
    keys = [p.rstrip("/") for p in listing["common_prefixes"]]
    keys += [o["path"] for o in listing["objects"]]
    return [key.rpartition("/")[2] for key in keys]


# the documents a store (or a group or array in it) has at its root: a container's, or a Zarr v2
# array's
STORE_MARKERS = (*CONTAINER_MARKERS, ".zarray")


def exists(url: PurePath | UrlPath) -> bool:
    """Whether an object ``url`` exists, or any object below it (a store). A web server
    (``http``, ``https``) cannot list: there a store is known by one of :data:`STORE_MARKERS`
    below ``url`` (a listing would be a WebDAV request, refused by plain servers and retried)."""
    url = as_url(url)
    import obstore

    try:
        obstore.head(store(url.root), url.key)
        return True
    except FileNotFoundError:
        pass
    if url.scheme in READ_ONLY:
        return any(exists_object(url / name) for name in STORE_MARKERS)
    prefix = url.key.rstrip("/") + "/"
    for batch in obstore.list(store(url.root), prefix=prefix, chunk_size=1):
        if batch:
            return True
    return False


def delete_prefix(
    url: PurePath | UrlPath, include_self: bool = True, values: Mapping | None = None
) -> int:
    """Remove every object below ``url`` (and the object ``url`` itself); return how many."""
    url = as_url(url)
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
    url = as_url(url)
    import obstore

    try:
        meta = obstore.head(store(url.root), url.key)
    except FileNotFoundError:
        return None
    return int(meta["size"]), str(meta.get("e_tag") or meta.get("last_modified"))


def listing(url: PurePath | UrlPath) -> list[tuple[str, int, str]]:
    """(key, size, entity tag) of the object ``url``, or of every object below it; raises
    OSError if it cannot be listed."""
    url = as_url(url)
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
    url = as_url(url)
    import obstore

    with open(path, "rb") as f:
        obstore.put(store(url.root), url.key, f)


def put_bytes(url: PurePath | UrlPath, data: bytes, values: Mapping | None = None) -> None:
    url = as_url(url)
    import obstore

    obstore.put(store(url.root, values), url.key, data)


def get_bytes(url: PurePath | UrlPath, values: Mapping | None = None) -> bytes:
    url = as_url(url)
    import obstore

    return bytes(obstore.get(store(url.root, values), url.key).bytes())


def copy(source: PurePath | UrlPath, target: PurePath | UrlPath) -> None:
    """Copy an object within one store (server-side)."""
    source = as_url(source)
    target = as_url(target)
    import obstore

    obstore.copy(store(source.root), source.key, target.key)


class RemoteFile:
    """A seekable, read-only file over an object (range requests, buffered by obstore), for
    readers that take a file object (h5py, tifffile). Picklable: reopened in each process."""

    def __init__(
        self, url: PurePath | UrlPath, buffer_size: int = 2**20, values: Mapping | None = None
    ):
        self.url, self.buffer_size = as_url(url), buffer_size
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


def delete_object(url: PurePath | UrlPath) -> None:
    import obstore

    url = as_url(url)
    with contextlib.suppress(FileNotFoundError):
        obstore.delete(store(url.root), url.key)


def exists_object(url: PurePath | UrlPath, values: Mapping | None = None) -> bool:
    url = as_url(url)
    import obstore

    try:
        obstore.head(store(url.root, values), url.key)
        return True
    except FileNotFoundError:
        return False
