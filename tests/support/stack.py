"""A running reqworker stack for integration tests: profiles, a worker, a client."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.client import Batch, Client
from tests.support import WorkerProcess, base_env, start_all
from tests.support.loopback import LoopbackAPI
from worker.profiles import load_profiles
from worker.settings import Settings

TOKEN = "tok-3f9a7c1e5b2d4a6890e1"

PROFILES = """
[apis.fast]
base_url = "{url}"
timeout = 5
backoff = {{ start = 0.05, factor = 2, count = 4 }}

[apis.seed]
base_url = "{url}"
timeout = 5

[apis.slow]
base_url = "{url}"
timeout = 2
backoff = {{ start = 0.05, factor = 2, count = 2 }}

[apis.bearer]
base_url = "{url}/secure"
timeout = 5
follow_redirects = "any"
backoff = {{ start = 0.05, factor = 2, count = 2 }}

[apis.bearer.auth]
kind = "bearer"
token = "${{TEST_API_TOKEN}}"
"""


@dataclass
class Stack:
    api: LoopbackAPI
    env: dict[str, str]
    client: Client
    tmp: Path

    def run(self, job: dict[str, Any], *, within_s: float = 60) -> dict[str, Any]:
        """Submit one job, wait for it, and return its result record."""
        batch, _ = self.client.submit(job)
        batch.wait(poll_s=0.05, timeout_s=within_s)
        return next(batch.results())

    def worker(self, name: str, **kwargs: Any) -> WorkerProcess:
        return WorkerProcess(self.env, self.tmp / f"{name}.log", **kwargs).wait_ready()

    def workers(self, *names: str, **kwargs: Any) -> list[WorkerProcess]:
        """One worker for each name, started together."""
        return start_all(WorkerProcess(self.env, self.tmp / f"{name}.log", **kwargs) for name in names)


def countdowns(log: str, job_id: str) -> list[float]:
    """The countdowns a job's task asked Celery for, as the worker logged them."""
    return [float(m) for m in re.findall(rf"job {re.escape(job_id)} countdown=([0-9.e+-]+)", log)]


def new_stack(redis_url: str, api: LoopbackAPI, tmp: Path, *, profiles: str = PROFILES,
              extra_profiles: str = "", **env_extra: str) -> Stack:
    """A stack whose apis.toml is ``profiles`` (a ``str.format`` template of ``{url}``, the
    loopback API's address, with literal braces doubled) and ``extra_profiles`` (more TOML,
    where ``{url}`` is replaced as it is)."""
    apis = tmp / "apis.toml"
    apis.write_text(profiles.format(url=api.url) + extra_profiles.replace("{url}", api.url))
    # A key prefix of its own: pauses and budgets of one stack never reach another.
    env_extra.setdefault("REQWORKER_KEY_PREFIX", f"t{uuid.uuid4().hex[:8]}")
    env = base_env(redis_url, str(apis), TEST_API_TOKEN=TOKEN, **env_extra)
    settings = Settings.from_env(env)
    client = Client(settings, load_profiles(apis, env, with_secrets=False))
    return Stack(api, env, client, tmp)


@contextmanager
def make_stack(redis_url: str, api: LoopbackAPI, tmp: Path, *, extra_profiles: str = "",
               **env_extra: str) -> Iterator[Stack]:
    """``new_stack`` with the profiles above, for a ``with`` block or a fixture."""
    yield new_stack(redis_url, api, tmp, extra_profiles=extra_profiles, **env_extra)


def one_worker(stack: Stack, concurrency: int = 4, name: str = "worker") -> Iterator[WorkerProcess]:
    """The body of a module's ``worker`` fixture: one worker for the module's tests."""
    proc = stack.worker(name, concurrency=concurrency)
    yield proc
    proc.stop()


def finished(batch: Batch) -> bool:
    return batch.status().finished
