"""A minimal keep-alive HTTP/1.1 server answering every GET with a small JSON object.

The bench's "fast local API": one asyncio process, one write per response and
TCP_NODELAY, so neither the server nor Nagle's algorithm is what a run measures.
Run ``python -m bench.echo_server``; it prints its port on the first line of stdout.

With ``--limit 50`` it is a rate-limited API as well: at most 50 requests are answered
200 in any sliding window of ``--window`` seconds (1 by default); beyond that it answers
429 with ``Retry-After: 1``. Only the answered requests count against the window. It
logs the arrival time (``time.time()``, taken when the request head has been read) and
the status of every request, which ``GET /_stats`` returns as JSON and ``GET /_reset``
clears. Paths under ``/_`` are neither limited nor logged.

With ``--storm 30`` it plays a Retry-After storm instead: for 30 s from the first
request it answers 429 with ``Retry-After`` set to the whole seconds left of the
storm, then 200; ``/_stats`` and ``/_reset`` work as above.

With ``--delay 0.1`` every answer waits 0.1 s first (a slow API; requests on different
connections wait at the same time). A GET of ``/pages/NAME/I/N`` answers page I of N
with ``"next"``: the absolute URL of page I + 1, or null on the last page.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import math
import socket
import sys
import time
from typing import Any


class SlidingWindow:
    """At most ``limit`` accepted requests in any ``window_s`` seconds; logs every request."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.reset()

    def reset(self) -> None:
        self._recent: collections.deque[float] = collections.deque()
        self.ok: list[float] = []
        self.refused: list[float] = []

    def allow(self, now: float) -> bool:
        while self._recent and self._recent[0] <= now - self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.limit:
            self.refused.append(now)
            return False
        self._recent.append(now)
        self.ok.append(now)
        return True

    def retry_after(self, now: float) -> int:
        return 1

    def stats(self) -> dict[str, Any]:
        return {"limit": self.limit, "window_s": self.window_s, "ok": self.ok, "refused": self.refused}


class Storm(SlidingWindow):
    """429 with a Retry-After of the seconds left, for ``storm_s`` from the first request."""

    def __init__(self, storm_s: float) -> None:
        self.storm_s = storm_s
        super().__init__(0, 0.0)

    def reset(self) -> None:
        super().reset()
        self.ends: float | None = None

    def allow(self, now: float) -> bool:
        if self.ends is None:
            self.ends = now + self.storm_s
        if now < self.ends:
            self.refused.append(now)
            return False
        self.ok.append(now)
        return True

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil((self.ends or now) - now))

    def stats(self) -> dict[str, Any]:
        return {"storm_s": self.storm_s, "ends": self.ends, "ok": self.ok, "refused": self.refused}


def _response(status: str, body: dict[str, Any], extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)


def _answer(method: str, target: str, host: str, limiter: SlidingWindow | None) -> bytes:
    if limiter is not None:
        if target.startswith("/_"):
            if target == "/_reset":
                limiter.reset()
            return _response("200 OK", limiter.stats())
        now = time.time()
        if not limiter.allow(now):
            message = f"rate limit: {limiter.limit} requests per {limiter.window_s:g} s"
            wait = str(limiter.retry_after(now)).encode()
            return _response("429 Too Many Requests", {"error": {"message": message}},
                             b"Retry-After: " + wait + b"\r\n")
    return _response("200 OK", _page(target, host) if target.startswith("/pages/") else
                     {"ok": True, "method": method, "path": target})


def _page(target: str, host: str) -> dict[str, Any]:
    """Page I of N of ``/pages/NAME/I/N``, with the next page's URL (null on the last)."""
    name, index, count = target[len("/pages/"):].split("/")[:3]
    i, n = int(index), int(count)
    following = f"http://{host}/pages/{name}/{i + 1}/{n}" if i + 1 < n else None
    return {"ok": True, "path": target, "page": i, "next": following}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limiter: SlidingWindow | None = None, delay_s: float = 0.0) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length, host = 0, "127.0.0.1"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                elif name.strip().lower() == "host":
                    host = value.strip()
            if length:
                await reader.readexactly(length)
            if delay_s and not target.startswith("/_"):
                await asyncio.sleep(delay_s)
            writer.write(_answer(method, target, host, limiter))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main(limiter: SlidingWindow | None, delay_s: float) -> None:
    server = await asyncio.start_server(functools.partial(_serve, limiter=limiter, delay_s=delay_s),
                                        "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="requests answered per window")
    parser.add_argument("--window", type=float, default=1.0, help="seconds of the sliding window")
    parser.add_argument("--storm", type=float, default=None, help="seconds of a Retry-After storm")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    limiter: SlidingWindow | None = None
    if args.storm:
        limiter = Storm(args.storm)
    elif args.limit:
        limiter = SlidingWindow(args.limit, args.window)
    try:
        asyncio.run(_main(limiter, args.delay))
    except KeyboardInterrupt:
        sys.exit(0)
