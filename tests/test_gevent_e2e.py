"""A worker on the gevent pool (``reqworker worker --pool gevent``) keeps the job semantics.

Many greenlets at once acknowledge, retry, cache and count jobs through the same Redis;
each job must still run once, retry with its countdowns and share the GET cache.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from producer.localredis import LocalRedis
from producer.loopback_api import LoopbackAPI, Reply
from tests.stack import Stack, countdowns, make_stack
from tests.support import WorkerProcess, eventually

pytestmark = pytest.mark.integration

pytest.importorskip("gevent")


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("gevent")) as s:
        yield s


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    proc = stack.worker("gevent", concurrency=100, pool="gevent")
    yield proc
    proc.stop()


def test_a_batch_on_gevent_runs_every_job_once(stack: Stack, worker: WorkerProcess) -> None:
    prefix = f"/echo/g/{uuid.uuid4().hex[:8]}"
    jobs = [{"api": "fast", "path": f"{prefix}/{i}", "key": str(i)} for i in range(150)]
    batch = stack.client.submit_many(jobs).batch
    counts = batch.wait(poll_s=0.1, timeout_s=120)
    assert (counts.succeeded, counts.failed) == (150, 0)
    assert sorted(int(r["key"]) for r in batch.results()) == list(range(150))
    hits = [h.path for h in stack.api.hits() if h.path.startswith(prefix)]
    assert sorted(hits) == sorted(f"{prefix}/{i}" for i in range(150))
    assert "Too many connections" not in worker.log()


def test_retries_and_the_cache_work_on_gevent(stack: Stack, worker: WorkerProcess) -> None:
    path = f"/g/{uuid.uuid4().hex[:12]}"
    stack.api.script(path, Reply(500), Reply(503), Reply(json={"n": 3}))
    record = stack.run({"api": "fast", "path": path})
    assert record["ok"] is True and record["attempts"] == 3 and record["body"] == {"n": 3}
    assert countdowns(worker.log(), record["job_id"]) == pytest.approx([0.05, 0.1])
    again = stack.run({"api": "fast", "path": path})
    assert again["from_cache"] is True and again["body"] == {"n": 3}
    eventually(lambda: len(stack.api.hits(path)) == 3, what="three requests, none for the cached run")
