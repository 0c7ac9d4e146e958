"""What waiting and running jobs survive (real workers, a private redis-server).

A worker killed outright gives its jobs back within a minute, and parked jobs survive
a Redis restart and a stop of the whole fleet. How jobs wait: ``test_waiting_e2e``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, eventually, stop_all
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.waiting import make, parked, pause, submit_many
from worker.settings import Settings

pytestmark = pytest.mark.integration

#: The kill test's own profile: its timeout outlasts the wait for the kill, and it would
#: not fit the short visibility timeout another test sets.
LONG = """
[apis.long]
base_url = "{url}"
timeout = 30
"""


@pytest.fixture
def api() -> Iterator[LoopbackAPI]:
    with LoopbackAPI() as server:
        yield server


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


def test_parked_jobs_survive_a_redis_restart_and_the_workers_reconnect(
        api: LoopbackAPI, tmp_path: Path) -> None:
    with LocalRedis(persist=True) as server:
        stack = make(server.url, api, tmp_path)
        path = f"/restart/{uuid.uuid4().hex}"
        api.script(path, Reply(json={"ok": 1}))
        worker = stack.worker("r", concurrency=4)
        try:
            # The 8 s are for parking the jobs, not for starting the worker.
            pause(stack, "storm", 8)
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

