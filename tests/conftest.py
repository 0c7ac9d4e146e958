"""Shared fixtures: a private redis-server, a loopback API, and the environment to reach them.

Nothing here touches the machine's own Redis or RabbitMQ.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from producer.localredis import LocalRedis
from producer.loopback_api import LoopbackAPI
from tests.support import WorkerProcess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def _no_worker_left_behind() -> Iterator[None]:
    yield
    for worker in WorkerProcess.started:
        worker.kill()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="session")
def loopback_api() -> Iterator[LoopbackAPI]:
    with LoopbackAPI() as api:
        yield api


def base_env(redis_url: str, apis_path: str, **extra: str) -> dict[str, str]:
    """The environment of a reqworker process pointed at the test services only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQWORKER_", "CELERY_"))}
    env.update(REQWORKER_REDIS_URL=redis_url, REQWORKER_APIS=apis_path,
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    env.update(extra)
    return env
