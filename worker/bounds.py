"""The bounds of one HTTP attempt: a whole-attempt deadline and a largest answer.

requests' ``timeout`` bounds each socket operation, so an API that sends one byte a
second keeps an attempt alive for ever. Here one watchdog thread per process shuts
down the socket of an attempt that outlives its deadline (connect, headers, body and
redirects together), and the body is read in pieces, counted after decompression, so
an answer larger than ``max_body`` fails before it is held in memory.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

#: Bytes read (after decompression) per step while an answer is counted.
READ_CHUNK = 64 * 1024


class ResponseTooLarge(requests.RequestException):
    """The answer grew beyond the profile's ``max_body`` (counted after decompression)."""


class AttemptTimeout(requests.exceptions.ReadTimeout):
    """The attempt as a whole (connect, headers, body, redirects) took longer than ``timeout``."""


class _Deadline:
    """One attempt's deadline and the connections it is using."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []

    def watch(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(conn)
        self.check()

    def check(self) -> None:
        if self.expired:
            raise AttemptTimeout(f"the attempt took longer than timeout = {self.timeout_s:g} s")

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            connections = list(self._connections)
        for conn in connections:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires deadlines in order (per process: built after a fork)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        threading.Thread(target=self._run, name="reqworker-deadlines", daemon=True).start()

    def add(self, at: float, deadline: _Deadline) -> int:
        ident = next(self._ids)
        with self._cond:
            heapq.heappush(self._heap, (at, ident, deadline))
            # Wake the watchdog only when this deadline is now the earliest: attempts of one
            # profile share a timeout, so it almost never is, and a wake per attempt would
            # cost every job a switch to the watchdog thread.
            if self._heap[0][1] == ident:
                self._cond.notify()
        return ident

    def cancel(self, ident: int) -> None:
        with self._cond:
            self._cancelled.add(ident)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, ident, deadline = self._heap[0]
                wait_s = at - time.monotonic()
                if wait_s > 0 and ident not in self._cancelled:
                    self._cond.wait(wait_s)
                    continue
                heapq.heappop(self._heap)
                if ident in self._cancelled:
                    self._cancelled.discard(ident)
                    continue
            deadline.expire()


_watchdog: tuple[int, _Watchdog] | None = None
_watchdog_lock = threading.Lock()
_current = threading.local()


def _the_watchdog() -> _Watchdog:
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None or _watchdog[0] != os.getpid():
            _watchdog = (os.getpid(), _Watchdog())
        return _watchdog[1]


@contextmanager
def attempt_deadline(timeout_s: float) -> Iterator[_Deadline]:
    """Bound everything this thread sends inside the block to ``timeout_s`` seconds in all."""
    deadline = _Deadline(timeout_s)
    watchdog = _the_watchdog()
    ident = watchdog.add(time.monotonic() + timeout_s, deadline)
    _current.deadline = deadline
    try:
        yield deadline
    finally:
        _current.deadline = None
        watchdog.cancel(ident)


class HeldBack(Exception):
    """Raised where a request would go to the network, when ``admitting``'s check refused it."""

    def __init__(self, ticket: Any) -> None:
        super().__init__(ticket)
        self.ticket = ticket


@contextmanager
def admitting(check: Callable[[], None] | None) -> Iterator[None]:
    """Run ``check`` just before this thread's next request goes to the network (once,
    redirects included); a cache hit never gets there. ``check`` raises ``HeldBack``."""
    _current.admit = check
    try:
        yield
    finally:
        _current.admit = None


def admit_now() -> None:
    """Run the check ``admitting`` set, once: adapters call it before a request goes out."""
    check: Callable[[], None] | None = getattr(_current, "admit", None)
    if check is not None:
        _current.admit = None
        check()


def _watch(conn: HTTPConnection) -> None:
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(conn)


class _Watched:
    """A urllib3 connection that puts itself under the current attempt's deadline."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class BoundedAdapter(HTTPAdapter):
    """An adapter whose connections obey the attempt's deadline and whose answers ``max_body``."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None,
             proxies: dict[str, str] | None = None) -> requests.Response:
        admit_now()
        response = super().send(request, stream=True, timeout=timeout, verify=verify, cert=cert,
                                proxies=proxies)
        if not stream:
            try:
                read_bounded(response, self.max_body)
            except BaseException:
                response.close()
                raise
        return response


def read_bounded(response: requests.Response, max_body: int) -> None:
    """Read the whole answer into ``response.content``, failing once it passes ``max_body``.

    urllib3 decompresses at most what each read asks for, so a compressed bomb never
    grows beyond one chunk past the limit.
    """
    chunks: list[bytes] = []
    size = 0
    raw = response.raw
    try:
        while True:
            chunk = raw.read(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > max_body:
                raise ResponseTooLarge(
                    f"the answer is larger than max_body = {max_body} bytes (after decompression)")
            chunks.append(chunk)
    except ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from None
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        # A socket shut down by the watchdog may look like the end of a body without a length.
        deadline.check()
    response._content = b"".join(chunks)
    response._content_consumed = True
