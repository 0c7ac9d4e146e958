"""Test helpers: real worker processes, waiting on conditions, the environment of a test process.

More in this package: ``stack`` (a running reqworker stack), ``oauth`` (fake OAuth
providers), ``flower`` (Flower as a subprocess), ``deployfiles`` (reading deploy/),
``admission`` (a scripted limiter for the gate), ``loopback`` (the scriptable loopback API
the fixtures start). The private redis-server is ``producer.demo.localredis``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import redis

from producer.demo.processes import stop_group, stop_groups

REQWORKER = [sys.executable, "-m", "producer.cli"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def base_env(redis_url: str, apis_path: str, **extra: str) -> dict[str, str]:
    """The environment of a reqworker process pointed at the test services only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQWORKER_", "CELERY_"))}
    env.update(REQWORKER_REDIS_URL=redis_url, REQWORKER_APIS=apis_path,
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def eventually(check: Callable[[], Any], *, within_s: float = 60.0, every_s: float = 0.05,
               what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after a generous deadline.

    The deadline is a hang guard, not a timing assertion.
    """
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within_s:g} s")
        time.sleep(every_s)


class WorkerProcess:
    """A real ``reqworker worker`` subprocess with its log in a file."""

    #: Every worker started, so the session can stop any a failing test left behind.
    started: ClassVar[list[WorkerProcess]] = []

    def __init__(self, env: Mapping[str, str], log_path: Path, *, concurrency: int = 4,
                 pool: str = "threads", hostname: str | None = None,
                 command: list[str] | None = None) -> None:
        """``command`` replaces ``reqworker worker …`` (``celery -A worker.app worker``)."""
        self.log_path = log_path
        # A node name of its own: two workers named alike clash on RabbitMQ (exclusive
        # control queues) and confuse Flower.
        hostname = hostname or f"{log_path.stem}-{uuid.uuid4().hex[:6]}@%h"
        #: Its node name, as Celery's remote control addresses it.
        self.nodename = hostname.replace("%h", socket.gethostname())
        # Without mingle (deploy/README.md suggests it for large fleets): at start-up, Celery
        # would wait a second for the other workers to say which jobs were revoked; no test
        # revokes one.
        args = command or [*REQWORKER, "worker", "--concurrency", str(concurrency),
                           "--pool", pool, "--hostname", hostname, "--", "--without-mingle"]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env=dict(env), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        WorkerProcess.started.append(self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> WorkerProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            return " ready." in self.log()

        try:
            eventually(ready, within_s=60, every_s=0.1, what="worker start")
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """kill -9 the whole worker (its process group)."""
        stop_group(self.proc, grace_s=0)
        self._log.close()

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()


def start_all(workers: Iterable[WorkerProcess]) -> list[WorkerProcess]:
    """Wait until all the workers, started together, are ready (or kill them all)."""
    workers = list(workers)
    try:
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    return workers


def stop_all(workers: Iterable[WorkerProcess]) -> None:
    """SIGTERM all the workers at once (their warm shutdowns overlap), as ``stop`` does one."""
    workers = list(workers)
    stop_groups([worker.proc for worker in workers])
    for worker in workers:
        worker._log.close()


def run_cli(env: Mapping[str, str], *args: str, input_text: str | None = None,
            timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REQWORKER, *args], env=dict(env), input=input_text, text=True,
                          capture_output=True, timeout=timeout_s)


def flush(url: str) -> None:
    redis.Redis.from_url(url).flushdb()
