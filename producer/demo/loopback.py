"""A scriptable HTTP API on loopback: plays the API in the demo, the tests and the bench.

It answers each path from a script of replies (the last one repeats), so a test can
say "500 four times, then 200"; it can also reset connections, answer slowly, and
record every request it saw.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering.
    delay_s: float = 0.0
    #: Close the connection with a reset instead of answering.
    reset: bool = False
    #: The body as bytes, sent as given (for compressed or malformed answers).
    raw: bytes | None = None
    #: Send the body one byte at a time, this many seconds apart.
    drip_s: float = 0.0


@dataclass(frozen=True)
class Hit:
    """One request the API received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float


Handler = Callable[[Hit], Reply | None]


class LoopbackAPI:
    """A threaded HTTP server on 127.0.0.1 answering from scripts."""

    def __init__(self, fallback: Handler | None = None) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[tuple[str | None, str], list[Reply]] = {}
        self._hits: list[Hit] = []
        self._answers: Counter[str] = Counter()
        self.fallback = fallback
        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._server.api = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, path: str, *replies: Reply, method: str | None = None) -> None:
        """Answer ``path`` (any method, or only ``method``) with ``replies`` in turn."""
        if not replies:
            raise ValueError("a script needs at least one reply")
        with self._lock:
            self._scripts[(method, path)] = list(replies)

    def hits(self, path: str | None = None) -> list[Hit]:
        with self._lock:
            return [h for h in self._hits if path is None or h.path == path]

    def answers(self) -> Counter[str]:
        """How many answers the API gave, by status code ("reset" for a reset connection)."""
        with self._lock:
            return Counter(self._answers)

    def count_answer(self, reply: Reply) -> None:
        with self._lock:
            self._answers["reset" if reply.reset else str(reply.status)] += 1

    def reply_for(self, hit: Hit) -> Reply:
        with self._lock:
            self._hits.append(hit)
            script = self._scripts.get((hit.method, hit.path)) or self._scripts.get((None, hit.path))
            if script:
                return script.pop(0) if len(script) > 1 else script[0]
        if self.fallback is not None:
            reply = self.fallback(hit)
            if reply is not None:
                return reply
        if hit.path.startswith("/echo"):
            return Reply(json={"method": hit.method, "path": hit.path, "query": hit.query,
                               "body": hit.body.decode(errors="replace")})
        return Reply(404, json={"error": {"status": 404, "message": f"no such path {hit.path}"}})

    def start(self) -> LoopbackAPI:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="loopback-api")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LoopbackAPI:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    api: LoopbackAPI


class _RequestHandler(BaseHTTPRequestHandler):
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
        hit = Hit(self.command, parts.path, parts.query, dict(self.headers.items()), body,
                  time.time())
        reply = self.server.api.reply_for(hit)
        self.server.api.count_answer(reply)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if reply.raw is not None:
            payload, ctype = reply.raw, "application/json"
        elif reply.json is not None:
            payload = json.dumps(reply.json).encode()
            ctype = "application/json"
        else:
            payload = (reply.text or "").encode()
            ctype = "text/plain; charset=utf-8"
        self.send_response(reply.status)
        if "content-type" not in {name.lower() for name in reply.headers}:
            self.send_header("Content-Type", ctype)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if not reply.drip_s:
            self.wfile.write(payload)
            return
        try:
            for i in range(len(payload)):
                self.wfile.write(payload[i:i + 1])
                self.wfile.flush()
                time.sleep(reply.drip_s)
        except OSError:  # the client gave up on us, as it should
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle
