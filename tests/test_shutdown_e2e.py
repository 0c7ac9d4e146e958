"""A normal restart (SIGTERM) loses no job and runs none twice, on either broker."""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.demo.localredis import LocalRedis
from tests.support import eventually
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI, broker: dict[str, str],
          tmp_path: Path) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path, **broker) as s:
        yield s


def test_sigterm_finishes_running_jobs_and_hands_back_waiting_ones(stack: Stack) -> None:
    running, waiting = f"/slow/{uuid.uuid4().hex}", f"/later/{uuid.uuid4().hex}"
    stack.api.script(running, Reply(delay_s=3, json={"finished": "before exit"}))
    stack.api.script(waiting, Reply(429, headers={"Retry-After": "8"}), Reply(json={"ok": True}))
    first = stack.worker("first", concurrency=2)
    try:
        slow, _ = stack.client.submit({"api": "seed", "path": running})
        later, later_id = stack.client.submit({"api": "seed", "path": waiting})
        eventually(lambda: re.search(rf"job {later_id} countdown=8", first.log()),
                   what="the second job's countdown")
        eventually(lambda: stack.api.hits(running), what="the slow job in flight")
        os.killpg(first.proc.pid, signal.SIGTERM)
        # a hang guard: warm shutdown waits for the running attempt, bounded by its timeout
        first.proc.wait(timeout=60)
    finally:
        first.stop()
    assert "worker: Warm shutdown (MainProcess)" in first.log()
    assert "Cold shutdown" not in first.log()
    assert first.proc.returncode == 0
    assert next(slow.results())["body"] == {"finished": "before exit"}
    second = stack.worker("second", concurrency=2)
    try:
        later.wait(poll_s=0.2, timeout_s=120)
    finally:
        second.stop()
    record = next(later.results())
    assert record["ok"] is True
    assert record["attempts"] == 2
    assert len(stack.api.hits(running)) == 1
    assert len(stack.api.hits(waiting)) == 2
