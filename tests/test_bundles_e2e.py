"""Bundles: several jobs in one message, each with its own result, retries and count.

Real workers, a private redis-server (and RabbitMQ where reachable for the crash and
shutdown tests), the loopback API.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.bundling import job_ids
from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, eventually
from tests.support.loopback import Hit, LoopbackAPI, Reply
from tests.support.stack import Stack, new_stack
from worker.errors import JobFailed
from worker.jobs import BUNDLE_TASK_NAME, TASK_NAME

pytestmark = pytest.mark.integration

#: The shortest visibility timeout the start-up check allows for a 5 s attempt: on
#: Redis, a killed worker's bundle comes back after it.
VISIBILITY_TIMEOUT_S = "15"

PROFILES = """
[apis.open]
base_url = "{url}"
timeout = 5
backoff = {{ start = 0.05, factor = 2, count = 3 }}

[apis.limited]
base_url = "{url}"
rate_limit = "1000/s"
timeout = 5
"""


class GateAPI:
    """Answers every request; holds the requests to /held/ paths while ``open`` is clear,
    answers the first request to each /flaky/ path with a 503, and /gone/ with a 404."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self._lock = threading.Lock()
        self._flaked: set[str] = set()
        self.api = LoopbackAPI(fallback=self._answer)

    def _answer(self, hit: Hit) -> Reply | None:
        if "/held/" in hit.path:
            self.open.wait(timeout=120)
        if "/slow/" in hit.path:
            threading.Event().wait(0.3)  # longer than a bundle waits to write results together
        if "/gone/" in hit.path:
            return Reply(404, json={"error": {"message": "no such item"}})
        if "/flaky/" in hit.path:
            with self._lock:
                first = hit.path not in self._flaked
                self._flaked.add(hit.path)
            if first:
                return Reply(503)
        return Reply(json={"path": hit.path})


@pytest.fixture(scope="module")
def gate() -> Iterator[GateAPI]:
    api = GateAPI()
    with api.api:
        yield api
        api.open.set()


def _stack(redis_server: LocalRedis, gate: GateAPI, tmp: Path, **env: str) -> Stack:
    return new_stack(redis_server.url, gate.api, tmp, profiles=PROFILES,
                     REQWORKER_VISIBILITY_TIMEOUT=VISIBILITY_TIMEOUT_S, **env)


def _queued(stack: Stack) -> list[bytes]:
    client = stack.client.store.client
    return list(client.lrange(stack.client.settings.queue, 0, -1))


def test_a_bulk_enqueue_packs_plain_jobs_and_each_keeps_its_own_result(
        redis_server: LocalRedis, gate: GateAPI, tmp_path: Path) -> None:
    stack = _stack(redis_server, gate, tmp_path, REQWORKER_QUEUE=f"bundles-{uuid.uuid4().hex[:8]}")
    run = uuid.uuid4().hex[:8]
    plain = [{"api": "open", "path": f"/p/{run}/{i}", "key": f"p{i}"} for i in range(128)]
    posts = [{"api": "open", "method": "POST", "path": f"/post/{run}/{i}", "json": {}, "key": f"post{i}"}
             for i in range(2)]
    limited = [{"api": "limited", "path": f"/l/{run}/{i}", "key": f"l{i}"} for i in range(2)]
    report = stack.client.submit_many(plain + posts + limited, name="packed")

    # Before any worker runs: 128 plain GETs in 32 bundles of 4 (a chunk spreads over at
    # least 32 messages); a POST and a rate-limited job each in a message of its own.
    messages = _queued(stack)
    tasks = Counter(json.loads(m)["headers"]["task"] for m in messages)
    assert tasks == {BUNDLE_TASK_NAME: 32, TASK_NAME: 4}
    assert sorted(job_ids(messages)) == sorted(e["id"] for chunk in stack.client.store.entries(
        report.batch.id) for e in chunk)

    worker = stack.worker("packed", concurrency=4)
    try:
        counts = report.batch.wait(poll_s=0.1, timeout_s=120)
        records = {r["key"]: r for r in report.batch.results()}
        # A bundled job's result is stored under its own id, as Celery stores a task's.
        some = next(e for chunk in stack.client.store.entries(report.batch.id) for e in chunk
                    if e["job"]["key"] == "p5")
        got = stack.client.app.AsyncResult(some["id"]).get(timeout=30)
    finally:
        worker.stop()
    assert (counts.succeeded, counts.failed, counts.total) == (132, 0, 132)
    assert all(r["ok"] and r["attempts"] == 1 for r in records.values())
    assert got["key"] == "p5"
    assert got["ok"]
    hits = Counter(h.path for h in gate.api.hits() if f"/{run}/" in h.path)
    assert len(hits) == 132
    assert set(hits.values()) == {1}


def test_a_job_that_must_retry_leaves_its_bundle_and_the_others_go_on(
        redis_server: LocalRedis, gate: GateAPI, tmp_path: Path) -> None:
    stack = _stack(redis_server, gate, tmp_path)
    run = uuid.uuid4().hex[:8]
    jobs = [{"api": "open", "path": f"/{'flaky' if i % 5 == 0 else 'ok'}/{run}/{i}", "key": i}
            for i in range(64)]
    worker = stack.worker("retrying", concurrency=2)
    try:
        report = stack.client.submit_many(jobs, name="retrying")
        counts = report.batch.wait(poll_s=0.1, timeout_s=120)
        records = {r["key"]: r for r in report.batch.results()}
    finally:
        worker.stop()
    assert (counts.succeeded, counts.failed) == (64, 0)
    flaky = {i for i in range(64) if i % 5 == 0}
    assert {i for i, r in records.items() if r["attempts"] == 2} == flaky
    assert all(records[i]["attempts"] == 1 for i in range(64) if i not in flaky)
    # Each 503 was retried once, by a message of its own: the bundle did not run it again.
    hits = Counter(h.path for h in gate.api.hits() if f"/{run}/" in h.path)
    assert all(hits[f"/flaky/{run}/{i}"] == 2 for i in flaky)
    assert all(hits[f"/ok/{run}/{i}"] == 1 for i in range(64) if i not in flaky)
    assert "leaves bundle" in worker.log()


def test_a_job_of_a_bundle_that_fails_fails_alone_with_its_record(
        redis_server: LocalRedis, gate: GateAPI, tmp_path: Path) -> None:
    stack = _stack(redis_server, gate, tmp_path)
    run = uuid.uuid4().hex[:8]
    jobs = [{"api": "open", "path": f"/{'gone' if i == 7 else 'ok'}/{run}/{i}", "key": i} for i in range(64)]
    worker = stack.worker("failing", concurrency=2)
    try:
        report = stack.client.submit_many(jobs, name="failing")
        counts = report.batch.wait(poll_s=0.1, timeout_s=120)
        records = {r["key"]: r for r in report.batch.results()}
        gone = next(e["id"] for chunk in stack.client.store.entries(report.batch.id) for e in chunk
                    if e["job"]["key"] == 7)
        with pytest.raises(JobFailed) as failed:
            stack.client.app.AsyncResult(gone).get(timeout=30)
    finally:
        worker.stop()
    assert (counts.succeeded, counts.failed) == (63, 1)
    assert records[7]["error"]["status_code"] == 404
    assert records[7]["error"]["message"] == "no such item"
    assert failed.value.record["job_id"] == gone
    assert all(records[i]["ok"] for i in range(64) if i != 7)


def test_a_bundle_whose_worker_dies_runs_each_of_its_jobs_once(
        redis_server: LocalRedis, gate: GateAPI, broker: dict[str, str], tmp_path: Path) -> None:
    """kill -9 right after a bundle wrote its first job's result (a slow job's is written
    at once): the bundle comes back, and the next worker runs only the jobs not yet run."""
    stack = _stack(redis_server, gate, tmp_path, REQWORKER_JOBS_PER_MESSAGE="4", **broker)
    run = uuid.uuid4().hex[:8]
    jobs = [{"api": "open", "path": f"/slow/{run}/{i}", "key": i} for i in range(128)]
    report = stack.client.submit_many(jobs, name="killed")
    # Not wait_ready: the worker may take its first bundle, and die, before saying ready.
    doomed = WorkerProcess(dict(stack.env, REQWORKER_TEST_CRASH_AT="bundle-after-write"),
                           stack.tmp / "doomed.log", concurrency=1)
    try:
        eventually(lambda: doomed.proc.poll() is not None, what="the worker killing itself")
    finally:
        doomed.kill()
    assert "crash point bundle-after-write reached" in doomed.log()
    assert report.batch.status().succeeded == 1

    survivor = stack.worker("survivor", concurrency=4)
    try:
        counts = report.batch.wait(poll_s=0.2, timeout_s=240)
    finally:
        survivor.stop()
    assert (counts.succeeded, counts.failed, counts.total) == (128, 0, 128)
    assert "1 of its 4 jobs were settled before" in survivor.log()
    hits = Counter(h.path for h in gate.api.hits() if h.path.startswith(f"/slow/{run}/"))
    assert len(hits) == 128
    assert set(hits.values()) == {1}


def test_a_stopping_worker_finishes_one_job_and_hands_the_rest_of_its_bundle_back(
        redis_server: LocalRedis, gate: GateAPI, broker: dict[str, str], tmp_path: Path) -> None:
    """A warm shutdown waits for the job a bundle is running, not for all of its jobs."""
    stack = _stack(redis_server, gate, tmp_path, **broker)
    run = uuid.uuid4().hex[:8]
    jobs = [{"api": "open", "path": f"/held/{run}/{i}", "key": i} for i in range(512)]
    gate.open.clear()
    stopping = stack.worker("stopping", concurrency=1)
    try:
        report = stack.client.submit_many(jobs, name="stopping")
        eventually(lambda: any(h.path.startswith(f"/held/{run}/") for h in gate.api.hits()),
                   what="the first request in flight")
        os.killpg(stopping.proc.pid, signal.SIGTERM)  # a warm shutdown, as a deployment stops it
        eventually(lambda: "Warm shutdown" in stopping.log() or "worker: Warm" in stopping.log(),
                   what="the warm shutdown starting")
        gate.open.set()
        stopping.proc.wait(timeout=60)
    finally:
        gate.open.set()
        stopping.kill()
    assert "jobs back to the queue" in stopping.log()
    assert report.batch.status().succeeded == 1

    survivor = stack.worker("after", concurrency=4)
    try:
        counts = report.batch.wait(poll_s=0.2, timeout_s=240)
    finally:
        survivor.stop()
    assert (counts.succeeded, counts.failed, counts.total) == (512, 0, 512)
    hits = Counter(h.path for h in gate.api.hits() if h.path.startswith(f"/held/{run}/"))
    assert len(hits) == 512
    assert set(hits.values()) == {1}
