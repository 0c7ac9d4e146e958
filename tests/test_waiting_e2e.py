"""Waiting jobs wait in the broker, not inside workers (real workers, a private redis-server).

A job on a countdown is held by no worker; a worker killed outright gives its jobs
back within a minute; a pause storm makes no worker hoard; and parked jobs survive a
Redis restart and a stop of the whole fleet.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.client import Batch
from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, eventually, stop_all
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, new_stack
from worker.keys import Keys
from worker.parking import parked_key
from worker.ratelimit import RateLimiter
from worker.settings import Settings

pytestmark = pytest.mark.integration

PROFILES = """
[apis.wait]
base_url = "{url}"
timeout = 2
backoff = {{ start = 1, factor = 2, count = 4 }}

[apis.storm]
base_url = "{url}"
timeout = 2
backoff = {{ start = 1, factor = 2, count = 4 }}
"""


#: The kill test's own profile: its timeout outlasts the wait for the kill, and it would
#: not fit the short visibility timeout another test sets.
LONG = """
[apis.long]
base_url = "{url}"
timeout = 30
"""


def make(redis_url: str, api: LoopbackAPI, tmp: Path, *, profiles: str = PROFILES,
         **extra: str) -> Stack:
    extra.setdefault("REQWORKER_QUEUE", f"q{uuid.uuid4().hex[:8]}")
    return new_stack(redis_url, api, tmp, profiles=profiles, **extra)


def pause(stack: Stack, profile: str, seconds: float) -> None:
    """A fleet-wide pause, as a Retry-After storm leaves it."""
    settings = Settings.from_env(stack.env)
    RateLimiter(redis.Redis.from_url(settings.cache_url), Keys(settings.key_prefix)).pause(profile, seconds)


def held_by_workers(stack: Stack) -> int:
    """Jobs held unacknowledged by workers (kombu's Redis ack emulation)."""
    return int(redis.Redis.from_url(stack.env["REQWORKER_REDIS_URL"]).hlen("unacked"))


def parked(stack: Stack) -> int:
    queue = Settings.from_env(stack.env).queue
    return int(redis.Redis.from_url(stack.env["REQWORKER_REDIS_URL"]).zcard(parked_key(queue)))


def inspect_holds(stack: Stack, workers: list[WorkerProcess]) -> int | None:
    """Jobs the workers say they hold (scheduled on a countdown, reserved, running).

    Asked of these workers only: on RabbitMQ, the workers of other tests running at the
    same time (another process of the suite, another suite) would answer a broadcast too.
    """
    names = {w.nodename for w in workers}
    inspector = stack.client.app.control.inspect(destination=sorted(names), timeout=2.0)
    replies = [inspector.scheduled(), inspector.reserved(), inspector.active()]
    if any(r is None or set(r) != names for r in replies):
        return None  # a worker did not answer in time: ask again
    return sum(len(jobs) for reply in replies if reply for jobs in reply.values())


def submit_many(stack: Stack, jobs: list[dict[str, Any]]) -> Batch:
    return stack.client.submit_many(jobs).batch


@pytest.fixture
def api() -> Iterator[LoopbackAPI]:
    with LoopbackAPI() as server:
        yield server


def test_a_countdown_longer_than_the_visibility_timeout_waits_in_the_broker_and_runs_once(
        redis_server: LocalRedis, api: LoopbackAPI, broker: dict[str, str], tmp_path: Path) -> None:
    """The job waits 18 s, longer than the 12 s visibility timeout, and no worker holds it."""
    stack = make(redis_server.url, api, tmp_path, REQWORKER_VISIBILITY_TIMEOUT="12", **broker)
    path = f"/later/{uuid.uuid4().hex}"
    api.script(path, Reply(503, headers={"Retry-After": "18"}), Reply(json={"done": True}))
    workers = stack.workers("w0", "w1", concurrency=2)
    try:
        batch, _ = stack.client.submit({"api": "wait", "path": path})
        eventually(lambda: api.hits(path), what="the first attempt")
        eventually(lambda: inspect_holds(stack, workers) == 0, within_s=10,
                   what="no worker holding the job during its countdown")
        if not broker:
            assert parked(stack) == 1
            assert held_by_workers(stack) == 0
        assert len(api.hits(path)) == 1
        assert not batch.status().finished
        batch.wait(poll_s=0.2, timeout_s=120)
    finally:
        stop_all(workers)
    record = next(batch.results())
    assert record["ok"] is True
    assert record["attempts"] == 2
    assert len(api.hits(path)) == 2


def test_a_worker_killed_outright_has_its_jobs_run_by_the_others_within_a_minute(
        redis_server: LocalRedis, api: LoopbackAPI, tmp_path: Path) -> None:
    """Default settings (no REQWORKER_VISIBILITY_TIMEOUT): recovery inside 60 s.

    The profile's timeout (30 s) outlasts the test's wait for the kill, so the jobs come
    back only through the visibility timeout, not through a retry of their own.
    """
    stack = make(redis_server.url, api, tmp_path, profiles=LONG)
    assert "REQWORKER_VISIBILITY_TIMEOUT" not in stack.env
    paths = [f"/doomed/{uuid.uuid4().hex}" for _ in range(4)]
    for path in paths:
        api.script(path, Reply(delay_s=60, json={"first": 1}), Reply(json={"second": 1}))
    doomed = stack.worker("doomed", concurrency=4)
    survivor: WorkerProcess | None = None
    try:
        batch = submit_many(stack, [{"api": "long", "path": p} for p in paths])
        eventually(lambda: all(api.hits(p) for p in paths), what="every job in flight in one worker")
        survivor = stack.worker("survivor", concurrency=4)
        doomed.kill()
        batch.wait(poll_s=0.2, timeout_s=180)  # a hang guard; the minute is the setting's
    finally:
        doomed.kill()
        if survivor is not None:
            survivor.stop()
    records = list(batch.results())
    assert [r["body"] for r in records] == [{"second": 1}] * 4
    assert all(len(api.hits(p)) == 2 for p in paths)
    assert all(r["attempts"] == 1 for r in records)  # handed back, not retried
    # They came back through the visibility timeout, whose default is inside the minute.
    assert Settings.from_env(stack.env).visibility_timeout_s == 40


def test_a_pause_storm_leaves_jobs_in_redis_and_every_worker_shares_the_work_after(
        redis_server: LocalRedis, api: LoopbackAPI, tmp_path: Path) -> None:
    stack = make(redis_server.url, api, tmp_path)
    path = f"/storm/{uuid.uuid4().hex}"
    api.script(path, Reply(json={"ok": 1}))
    workers = stack.workers("s0", "s1", concurrency=2)
    try:
        pause(stack, "storm", 20)
        batch = submit_many(stack, [{"api": "storm", "path": path, "params": {"i": i}, "cache": False}
                                    for i in range(200)])
        eventually(lambda: parked(stack) == 200, what="the jobs parked in Redis")
        held: list[int] = []

        def storm_over() -> bool:
            held.append(held_by_workers(stack))
            pause_key = Keys(stack.env["REQWORKER_KEY_PREFIX"]).pause("storm")
            return bool(stack.client.store.client.pttl(pause_key) <= 1000)

        eventually(storm_over, every_s=0.2, what="the end of the pause")
        most_held = max(held)
        batch.wait(poll_s=0.2, timeout_s=120)
    finally:
        stop_all(workers)
    # Each worker holds at most its concurrency plus its prefetch (2 + 2).
    assert most_held <= 2 * (2 + 2)
    assert batch.status().succeeded == 200
    assert len(api.hits(path)) == 200
    for w in workers:
        assert "succeeded" in w.log(), f"{w.log_path.name} ran none of the jobs after the storm"


def test_parked_jobs_survive_a_redis_restart_and_the_workers_reconnect(
        api: LoopbackAPI, tmp_path: Path) -> None:
    with LocalRedis(persist=True) as server:
        stack = make(server.url, api, tmp_path)
        path = f"/restart/{uuid.uuid4().hex}"
        api.script(path, Reply(json={"ok": 1}))
        pause(stack, "storm", 8)
        worker = stack.worker("r", concurrency=4)
        try:
            batch = submit_many(stack, [{"api": "storm", "path": path, "params": {"i": i}}
                                        for i in range(50)])
            eventually(lambda: parked(stack) == 50, what="all jobs parked")
            server.restart()
            batch.wait(poll_s=0.2, timeout_s=120)
        finally:
            worker.stop()
        records = list(batch.results())
    assert len(records) == 50
    assert all(r["ok"] for r in records)
    assert sorted(int(h.query.split("=")[1]) for h in api.hits(path)) == list(range(50))


def test_a_fleet_stopped_with_jobs_parked_finishes_them_when_started_again(
        redis_server: LocalRedis, api: LoopbackAPI, broker: dict[str, str], tmp_path: Path) -> None:
    stack = make(redis_server.url, api, tmp_path, **broker)
    path = f"/fleet/{uuid.uuid4().hex}"
    api.script(path, Reply(503, headers={"Retry-After": "3"}), Reply(json={"ok": 1}))
    first = stack.workers("f0", "f1", concurrency=2)
    try:
        batch = submit_many(stack, [{"api": "wait", "path": path, "params": {"i": i}}
                                    for i in range(20)])
        eventually(lambda: api.hits(path), what="the first attempt")
        eventually(lambda: batch.status().pending == 0, what="every job waiting or done")
    finally:
        stop_all(first)  # SIGTERM: a normal restart of the whole fleet
    assert not batch.status().finished
    again = stack.worker("again", concurrency=4)
    try:
        batch.wait(poll_s=0.2, timeout_s=120)
    finally:
        again.stop()
    records = list(batch.results())
    assert len(records) == 20
    assert all(r["ok"] for r in records)
