"""The tests' scriptable API on loopback: the demo's ``LoopbackAPI`` with scripts and records.

It answers each path from a script of replies (the last one repeats), so a test can
say "500 four times, then 200"; then from its ``fallback``; then ``/echo…`` paths with
what they were sent. It records every request (``hits``) and counts its answers
(``answers``). Its replies can also reset the connection, come as given bytes or one
byte at a time.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producer.demo import loopback


@dataclass(frozen=True)
class Reply(loopback.Reply):
    """One scripted answer."""

    text: str | None = None
    #: Close the connection with a reset instead of answering.
    reset: bool = False
    #: The body as bytes, sent as given (for compressed or malformed answers).
    raw: bytes | None = None
    #: Send the body one byte at a time, this many seconds apart.
    drip_s: float = 0.0


@dataclass(frozen=True)
class Hit(loopback.Hit):
    """One request the API received, and when (``time.time()``)."""

    at: float = field(default_factory=time.time)


Handler = Callable[[Hit], loopback.Reply | None]


class _ScriptedHandler(loopback.RequestHandler):
    def answer(self, reply: loopback.Reply) -> None:
        if isinstance(reply, Reply) and reply.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        super().answer(reply)

    def body_of(self, reply: loopback.Reply) -> tuple[bytes, str]:
        if isinstance(reply, Reply) and reply.raw is not None:
            return reply.raw, "application/json"
        if isinstance(reply, Reply) and reply.json is None:
            return (reply.text or "").encode(), "text/plain; charset=utf-8"
        return super().body_of(reply)

    def write_body(self, payload: bytes, reply: loopback.Reply) -> None:
        if not isinstance(reply, Reply) or not reply.drip_s:
            super().write_body(payload, reply)
            return
        try:
            for i in range(len(payload)):
                self.wfile.write(payload[i:i + 1])
                self.wfile.flush()
                time.sleep(reply.drip_s)
        except OSError:  # the client gave up on us, as it should
            self.close_connection = True


class LoopbackAPI(loopback.LoopbackAPI):
    """A threaded HTTP server on 127.0.0.1 answering from scripts."""

    handler_class = _ScriptedHandler

    def __init__(self, fallback: Handler | None = None) -> None:
        super().__init__()
        self.fallback = fallback
        self._lock = threading.Lock()
        self._scripts: dict[tuple[str | None, str], list[loopback.Reply]] = {}
        self._hits: list[Hit] = []
        self._answers: Counter[str] = Counter()

    def script(self, path: str, *replies: loopback.Reply, method: str | None = None) -> None:
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

    def reply_for(self, hit: loopback.Hit) -> loopback.Reply:
        reply = self._reply_for(Hit(**vars(hit)))
        with self._lock:
            self._answers["reset" if isinstance(reply, Reply) and reply.reset
                          else str(reply.status)] += 1
        return reply

    def _reply_for(self, hit: Hit) -> loopback.Reply:
        with self._lock:
            self._hits.append(hit)
            script = self._scripts.get((hit.method, hit.path)) or self._scripts.get((None, hit.path))
            if script:
                return script.pop(0) if len(script) > 1 else script[0]
        reply = self.fallback(hit) if self.fallback is not None else None
        if reply is not None:
            return reply
        if hit.path.startswith("/echo"):
            return Reply(json=_echo(hit))
        return super().reply_for(hit)


def _echo(hit: Hit) -> dict[str, Any]:
    return {"method": hit.method, "path": hit.path, "query": hit.query,
            "body": hit.body.decode(errors="replace")}
