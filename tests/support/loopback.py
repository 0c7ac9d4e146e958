"""The tests' scriptable API on loopback: the demo's ``LoopbackAPI`` with scripts and records.

It answers each path from a script of replies (the last one repeats), so a test can
say "500 four times, then 200"; then from its ``fallback``; then ``/echo…`` paths with
what they were sent. It records every request (``hits``) and counts its answers
(``answers``). Its replies can also reset the connection, come as given bytes or one
byte at a time.

A hit's time (``Hit.at``) is when its request was sent: on Linux, the kernel's receive
time of the request's bytes (``SO_TIMESTAMPNS``), which on loopback is the moment the
client's ``send`` ran. So an API that counts requests per second counts what the
clients did, however late a thread of this (busy) process gets to read them.
"""

from __future__ import annotations

import io
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

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
    """One request the API received, and when it was sent (epoch seconds, see above)."""

    at: float = field(default_factory=time.time)


Handler = Callable[[Hit], loopback.Reply | None]

#: Linux's SO_TIMESTAMPNS (``socket`` does not name it): each read of a socket with it
#: set comes with the kernel's receive time of the bytes read. Elsewhere a hit's time
#: is when this process read its request (``time.time()``).
SO_TIMESTAMPNS = 35 if sys.platform == "linux" else None
_STAMP_SPACE = socket.CMSG_SPACE(16) if SO_TIMESTAMPNS is not None else 0
#: When the request a handler thread is answering was sent (``at``): set as the thread
#: reads the request, read as the same thread makes its ``Hit``.
_ARRIVAL = threading.local()


class _StampedReader(io.RawIOBase):
    """A connection's reading end that keeps the kernel's receive time of what it read last."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        #: Receive time (epoch seconds) of the bytes of the last read; None when unstamped.
        self.received_at: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size, ancillary, _flags, _address = self._sock.recvmsg_into([buffer], _STAMP_SPACE)
        self.received_at = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanoseconds = struct.unpack("qq", data[:16])
                self.received_at = seconds + nanoseconds / 1e9
        return size


class _ScriptedHandler(loopback.RequestHandler):
    _reader: _StampedReader | None = None

    def setup(self) -> None:
        super().setup()
        if SO_TIMESTAMPNS is not None and type(self.connection) is socket.socket:
            self.rfile.close()
            self._reader = _StampedReader(self.connection)
            self.rfile = io.BufferedReader(self._reader)

    def parse_request(self) -> bool:
        # The request line has just been read: its bytes came with the last read.
        stamp = self._reader.received_at if self._reader is not None else None
        _ARRIVAL.at = stamp if stamp is not None else time.time()
        return super().parse_request()

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
        if SO_TIMESTAMPNS is not None:
            # On the listening socket: every connection it accepts has it from its first byte.
            self._server.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.fallback = fallback
        self._lock = threading.Lock()
        self._scripts: dict[tuple[str | None, str], list[loopback.Reply]] = {}
        self._hits: list[Hit] = []
        self._answers: Counter[str] = Counter()

    def start(self) -> Self:
        # serve_forever looks for a shutdown every poll_interval (0.5 s by default): every
        # stop() would wait for that, and the suite stops a few hundred of these servers.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True, name="loopback-api")
        self._thread.start()
        return self

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
        reply = self._reply_for(Hit(**vars(hit), at=getattr(_ARRIVAL, "at", time.time())))
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
