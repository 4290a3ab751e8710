"""Requests an S3 server (moto, :class:`helpers.objstore.S3Server`) answered, counted by method
and bytes: a WSGI middleware wrapped around the server's application, so every request is seen
as the server sees it (after the client's retries, before moto answers)."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from typing import Any


class RequestCounter:
    """Counts requests (by method), the bytes sent in their bodies and received in GET answers;
    ``reset`` starts again."""

    def __init__(self, app: Any) -> None:
        self.app, self.lock = app, threading.Lock()
        self.methods: collections.Counter[str] = collections.Counter()
        self.sent = 0  # bytes of request bodies (PUT, POST)
        self.received = 0  # bytes of GET responses' bodies

    def __call__(self, environ: dict, start_response: Any) -> Any:
        with self.lock:
            self.methods[environ["REQUEST_METHOD"]] += 1
            self.sent += int(environ.get("CONTENT_LENGTH") or 0)
        answer = self.app(environ, start_response)
        if environ["REQUEST_METHOD"] != "GET":
            return answer
        return self._measured(answer)

    def _measured(self, answer: Any) -> Iterator[bytes]:
        try:
            for part in answer:
                with self.lock:
                    self.received += len(part)
                yield part
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()

    def reset(self) -> None:
        with self.lock:
            self.methods.clear()
            self.sent = self.received = 0


@contextlib.contextmanager
def counting(server: Any) -> Iterator[RequestCounter]:
    """Count the requests ``server`` (an :class:`~helpers.objstore.S3Server`) answers while in
    use. moto's threaded server is a werkzeug server whose ``app`` each request looks up."""
    wsgi = server.server._server
    counter = RequestCounter(wsgi.app)
    wsgi.app = counter
    try:
        yield counter
    finally:
        wsgi.app = counter.app
