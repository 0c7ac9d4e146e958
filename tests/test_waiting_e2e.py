"""Waiting jobs wait in the broker, not inside workers (real workers, a private redis-server).

A job on a countdown is held by no worker, and a pause storm makes no worker hoard.
What waiting jobs survive: ``test_waiting_survives_e2e``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, eventually, stop_all
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack
from tests.support.waiting import held_by_workers, make, parked, pause, submit_many
from worker.keys import Keys

pytestmark = pytest.mark.integration


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
