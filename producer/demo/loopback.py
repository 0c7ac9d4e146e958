"""An HTTP API on loopback that answers each request from a handler: the demo's API (the bench's too).

``LoopbackAPI(fallback=handler)`` serves every request with what ``handler`` returns for
its ``Hit`` (404 when it returns None). The tests' scriptable server
(``tests.support.loopback``) builds on it through ``reply_for`` and ``RequestHandler``'s
``answer``, ``body_of`` and ``write_body``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    """One answer: a JSON body (none without ``json``), after ``delay_s`` seconds."""

    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering.
    delay_s: float = 0.0


@dataclass(frozen=True)
class Hit:
    """One request the API received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Hit], Reply | None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    api: LoopbackAPI


class RequestHandler(BaseHTTPRequestHandler):
    """Reads a request into a ``Hit``, asks the API for its ``Reply`` and writes it."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, a kept-alive client's
    # delayed ACK would hold every answer back by tens of milliseconds.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        hit = Hit(self.command, parts.path, parts.query, dict(self.headers.items()), body)
        reply = self.server.api.reply_for(hit)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        self.answer(reply)

    def answer(self, reply: Reply) -> None:
        """Write ``reply``: status line, headers and (but to HEAD) body."""
        payload, ctype = self.body_of(reply)
        self.send_response(reply.status)
        if "content-type" not in {name.lower() for name in reply.headers}:
            self.send_header("Content-Type", ctype)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.write_body(payload, reply)

    def body_of(self, reply: Reply) -> tuple[bytes, str]:
        """The body of ``reply`` and its content type."""
        if reply.json is not None:
            return json.dumps(reply.json).encode(), "application/json"
        return b"", "text/plain; charset=utf-8"

    def write_body(self, payload: bytes, reply: Reply) -> None:
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


class LoopbackAPI:
    """A threaded HTTP server on 127.0.0.1 answering each request from ``fallback``."""

    #: Writes the replies; a subclass may answer in more ways.
    handler_class: ClassVar[type[RequestHandler]] = RequestHandler

    def __init__(self, fallback: Handler | None = None) -> None:
        self._handler = fallback
        self._server = _Server(("127.0.0.1", 0), self.handler_class)
        self._server.api = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def reply_for(self, hit: Hit) -> Reply:
        """The handler's reply to ``hit``, or a 404 when it has none."""
        reply = self._handler(hit) if self._handler is not None else None
        if reply is not None:
            return reply
        return Reply(404, json={"error": {"status": 404, "message": f"no such path {hit.path}"}})

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="loopback-api")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
