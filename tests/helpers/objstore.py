"""Object storage on loopback for the tests: an S3 server (moto), a proxy that makes a fraction
of requests fail, and a plain HTTP server for read-only URLs. Nothing reaches the network."""

from __future__ import annotations

import contextlib
import functools
import http.client
import http.server
import logging
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-do-not-show",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


_PUTS = threading.Lock()


def _atomic_puts() -> None:
    """Make moto's PutObject one step, as S3's is. moto checks ``If-None-Match: *`` and
    ``If-Match`` and then stores the object in two steps of one request thread, so two
    conditional puts racing through its threaded server can both pass the check (seen under
    load); S3 itself decides a conditional put atomically, and the claims lazyexport makes rely
    on that. Patched once per process; every put is serialized (moto is in-process Python)."""
    from moto.s3.responses import S3Response

    put = S3Response.put_object
    if getattr(put, "lazyexport_atomic", False):
        return

    @functools.wraps(put)
    def atomic(self, *args, **kwargs):
        with _PUTS:
            return put(self, *args, **kwargs)

    atomic.lazyexport_atomic = True  # type: ignore[attr-defined]
    S3Response.put_object = atomic  # type: ignore[method-assign]


class S3Server:
    """moto's S3 in server mode on 127.0.0.1 (a port of its own), its puts atomic as S3's."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        _atomic_puts()

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    @property
    def env(self) -> dict[str, str]:
        return {**ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=ENV["AWS_REGION"],
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> None:
        """Upload a file as the key ``prefix``, or every file below a directory under it."""
        client = self.client()
        if local.is_file():
            client.upload_file(str(local), bucket, prefix)
            return
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(local).as_posix()}".strip("/")
            client.upload_file(str(path), bucket, key)

    def download_tree(self, bucket: str, prefix: str, local: Path) -> Path:
        client = self.client()
        for key in self.keys(bucket, prefix):
            target = local / key[len(prefix) :].lstrip("/") if key != prefix else local
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
        return local

    def stop(self) -> None:
        self.server.stop()


_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


class FaultProxy:
    """A plain HTTP proxy to ``upstream`` that answers a fraction of requests with 503 (half
    before forwarding them, half after: the store saw the request, the client sees a failure);
    with ``deny``, every request with 403 Access Denied."""

    def __init__(self, upstream: str, fail: float, seed: int = 1, deny: bool = False) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        rng, lock = random.Random(seed), threading.Lock()
        self.failed = 0
        self.total = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if deny:
                    return self._answer(403, _DENIED)
                with lock:
                    proxy.total += 1
                    roll = rng.random()
                    failing = roll < fail
                    proxy.failed += failing
                if failing and roll < fail / 2:
                    return self._fail()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"{host}:{port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                if failing:
                    return self._fail()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                declared = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", declared or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _fail(self) -> None:
                self._answer(503, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def serve_directory(root: Path, directories: bool = True) -> Iterator[str]:
    """Serve ``root`` read-only over plain HTTP on loopback; yields the base URL.
    ``directories=False``: a directory's URL answers 404, as an object store's web endpoint
    does (only files are there)."""
    handler = functools.partial(_QuietFiles if directories else _FilesOnly, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Files with byte ranges (``Range: bytes=a-b``), as object stores serve them."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        wanted = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not wanted.startswith("bytes=") or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, _, last = wanted[len("bytes=") :].partition("-")
        start = int(first) if first else size - int(last)
        stop = min(int(last) + 1, size) if first and last else size
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        return _Limited(f, stop - start)


class _Limited:
    """The first ``size`` bytes of an open file, for copyfile."""

    def __init__(self, f, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def s3_bucket(name: str) -> Iterator[S3Server]:
    """An S3 server on loopback holding the bucket ``name``, its credentials in the environment
    while in use (the tests' module-scoped ``s3`` fixtures)."""
    server = S3Server()
    try:
        with environment(server.env):
            server.bucket(name)
            yield server
    finally:
        server.stop()


def key_prefix(node_name: str) -> str:
    """A key prefix of a test's own in a shared bucket, from its node name."""
    return "t-" + node_name.replace("[", "-").replace("]", "").replace("/", "-")[:80]


class _FilesOnly(_QuietFiles):
    """:class:`_QuietFiles` with 404 for a directory's URL."""

    def send_head(self):
        if Path(self.translate_path(self.path)).is_dir():
            self.send_error(404, "not a file")
            return None
        return super().send_head()
