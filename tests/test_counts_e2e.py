"""Honest counts with a real worker: waiting apart from retrying; a lost count is settled."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.demo.localredis import LocalRedis
from tests.support import eventually, run_cli
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path) as s:
        yield s


def test_a_paused_job_counts_as_waiting_and_a_backed_off_one_as_retrying(stack: Stack) -> None:
    limited = f"/limited/{uuid.uuid4().hex}"
    stack.api.script(limited, Reply(429, headers={"Retry-After": "8"}), Reply(json={"ok": 1}))
    worker = stack.worker("counts", concurrency=2)
    try:
        backing_off, _ = stack.client.submit({"api": "seed", "path": limited})
        # Counted as retrying once the worker has paused the profile for the Retry-After
        # (not as soon as the API has answered 429: a job sent then might pass before it).
        eventually(lambda: backing_off.status().retrying == 1, what="the 429 job retrying")
        # The Retry-After paused the profile: a job that comes now waits, it has not failed.
        paced, paced_id = stack.client.submit({"api": "seed", "path": f"/echo/{uuid.uuid4().hex}"})
        eventually(lambda: paced.status().waiting == 1, what="the paced job waiting")
        shown = json.loads(run_cli(stack.env, "status", paced.id, "--json").stdout)
        assert backing_off.status().waiting == 0
        assert paced.status().retrying == 0
        backing_off.wait(poll_s=0.2, timeout_s=120)
        final = paced.wait(poll_s=0.2, timeout_s=120)
    finally:
        worker.stop()
    assert (shown["waiting"], shown["retrying"], shown["pending"]) == (1, 0, 0)
    # What Flower shows of the waiting job (its task-retried event, logged as well):
    # what it waits for, not a failure.
    retried = [line for line in worker.log().splitlines() if f"[{paced_id}] retry:" in line]
    assert retried
    assert all("WaitLater(" in line and "paused (Retry-After)" in line
                           for line in retried)
    assert (final.succeeded, final.waiting, final.retrying) == (1, 0, 0)


def test_a_count_that_never_came_is_settled_by_watch_and_rebuilt_by_recount(stack: Stack) -> None:
    worker = stack.worker("settle", concurrency=2)
    try:
        report = stack.client.submit_many(
            [{"api": "fast", "path": f"/echo/{uuid.uuid4().hex}"} for _ in range(3)])
        report.batch.wait(poll_s=0.1, timeout_s=60)
    finally:
        worker.stop()
    batch, store = report.batch, stack.client.store
    lost = next(batch.results())["job_id"]
    # As if the worker died between storing this result and counting it, for good.
    store.client.srem(store.keys.batch_done(batch.id), lost)
    store.client.hincrby(store.keys.batch(batch.id), "succeeded", -1)
    assert batch.status().pending == 1

    watched = run_cli(stack.env, "watch", batch.id)
    assert watched.returncode == 0, watched.stderr
    assert "succeeded  3" in watched.stdout
    assert batch.status().finished

    store.client.hset(store.keys.batch(batch.id),
                      mapping={"succeeded": 0, "failed": 7, "retrying": 2, "waiting": 1})
    recounted = run_cli(stack.env, "recount", batch.id)
    assert recounted.returncode == 0, recounted.stderr
    assert "succeeded  3" in recounted.stdout
    assert "failed 7 -> 0" in recounted.stderr
    counts = batch.status()
    assert (counts.succeeded, counts.failed, counts.retrying, counts.waiting) == (3, 0, 0, 0)
