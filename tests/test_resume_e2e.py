"""An enqueue killed mid-file shows as interrupted and resumes: every line published once.

On both brokers: the bulk Redis publisher and Celery's own publish differently.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.bundling import job_ids
from producer.demo.localredis import LocalRedis
from producer.enqueue import enqueue
from producer.publish import RedisBulkPublisher
from tests.support import REQWORKER, eventually, run_cli
from tests.support.loopback import LoopbackAPI
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.integration

LINES = 1200
#: Lines written before the kill: the first chunk (500) is published, the rest is not.
BEFORE_KILL = 700
BAD = {3, 550}


@pytest.fixture
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI, broker: dict[str, str],
          tmp_path: Path) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path, **broker) as s:
        yield s


def _lines(run: str) -> list[str]:
    return ['{"api": "fast", "path": ' if n in BAD else
            json.dumps({"api": "fast", "path": f"/echo/{run}/{n}", "key": n})
            for n in range(1, LINES + 1)]


def test_an_enqueue_killed_mid_file_resumes_and_publishes_every_line_once(
        stack: Stack, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    lines = _lines(run)
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(lines) + "\n")
    store = stack.client.store
    enqueuing = subprocess.Popen([*REQWORKER, "enqueue", "-", "--name", "cut"], env=stack.env,
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, text=True)
    try:
        assert enqueuing.stdin is not None
        enqueuing.stdin.write("\n".join(lines[:BEFORE_KILL]) + "\n")
        enqueuing.stdin.flush()
        batch_id = eventually(lambda: [b.decode() for b in
                                       store.client.zrange(store.keys.batches(), 0, -1)],
                              what="the batch record")[0]
        eventually(lambda: store.facts(batch_id).get("published_line") == "500",
                   what="the first chunk published")
    finally:
        enqueuing.kill()
        enqueuing.wait()

    # The dead enqueue's lease lapses within seconds; then it counts as interrupted.
    eventually(lambda: stack.client.batch(batch_id).enqueuing().interrupted, every_s=0.5,
               what="the enqueue's lease lapsing")
    status = run_cli(stack.env, "status", batch_id).stdout
    assert "enqueue interrupted at line 501 (499 jobs published)" in status
    watched = run_cli(stack.env, "watch", batch_id)
    assert watched.returncode == 1
    assert "interrupted at line 501" in watched.stderr

    other = tmp_path / "other.jsonl"
    other.write_text("\n".join([*lines[:9], json.dumps({"api": "fast", "path": "/x"})]) + "\n")
    refused = run_cli(stack.env, "enqueue", str(other), "--resume", batch_id)
    assert refused.returncode == 2
    assert "line 10 is not the job" in refused.stderr

    resumed = run_cli(stack.env, "enqueue", str(jobs_file), "--resume", batch_id)
    assert resumed.returncode == 2, resumed.stderr  # line 550 is refused, once
    assert resumed.stdout.strip() == batch_id
    assert f"{LINES - 500 - 1} more jobs enqueued, 1 lines refused" in resumed.stderr
    again = run_cli(stack.env, "enqueue", str(jobs_file), "--resume", batch_id)
    assert again.returncode == 0
    assert "0 more jobs enqueued, 0 lines refused" in again.stderr

    facts = store.facts(batch_id)
    assert (facts["total"], facts["rejected"], facts["enqueued"]) == (str(LINES - 2), "2", "1")
    worker = stack.worker("resume", concurrency=8)
    try:
        counts = stack.client.batch(batch_id).wait(poll_s=0.2, timeout_s=240)
    finally:
        worker.stop()
    assert (counts.succeeded, counts.failed, counts.total) == (LINES - 2, 0, LINES - 2)
    hits = Counter(hit.path for hit in stack.api.hits() if hit.path.startswith(f"/echo/{run}/"))
    assert len(hits) == LINES - 2
    assert set(hits.values()) == {1}
    keys = sorted(r["key"] for r in stack.client.batch(batch_id).results())
    assert keys == [n for n in range(1, LINES + 1) if n not in BAD]


class _DiesAfter:
    """A publisher that stops the enqueue (as Ctrl-C would) before or after its Nth publish."""

    def __init__(self, inner: Any, nth: int, *, published: bool) -> None:
        self.inner, self.nth, self.published, self.calls = inner, nth, published, 0
        self.per_message = inner.per_message

    def publish(self, messages: Any) -> None:
        self.calls += 1
        if self.calls == self.nth and not self.published:
            raise KeyboardInterrupt
        self.inner.publish(messages)
        if self.calls == self.nth:
            raise KeyboardInterrupt


@pytest.mark.parametrize("published", [False, True], ids=["not-pushed", "pushed-and-running"])
def test_a_resume_settles_the_chunk_an_enqueue_recorded_but_may_not_have_published(
        redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path,
        published: bool) -> None:
    """Killed between recording a chunk and noting it published: resumed, it goes out once."""
    queue = f"resume-{uuid.uuid4().hex[:8]}"
    with make_stack(redis_server.url, loopback_api, tmp_path, REQWORKER_QUEUE=queue) as stack:
        client, store = stack.client, stack.client.store
        lines = [(n, {"api": "fast", "path": f"/echo/{queue}/{n}", "key": n})
                 for n in range(1, 1001)]
        batch_id = uuid.uuid4().hex
        store.create(batch_id, "cut")
        with pytest.raises(KeyboardInterrupt):
            enqueue(store, _DiesAfter(client.publisher, 2, published=published), client.profiles,
                    batch_id, lines)
        facts = store.facts(batch_id)
        assert (facts["published_line"], facts["recorded_line"]) == ("500", "1000")
        assert client.batch(batch_id).enqueuing().interrupted
        if published:  # a worker already ran one of the pushed jobs
            running = next(e for chunk in store.entries(batch_id) for e in chunk
                           if e["line"] == 501)
            client.app.backend.store_result(running["id"], {"ok": True}, "SUCCESS")
        report = client.resume(batch_id, lines)
        queued = job_ids(store.client.lrange(queue, 0, -1))
        store.client.delete(queue)
    recorded = [e["id"] for chunk in store.entries(batch_id) for e in chunk]
    assert report.accepted == 500
    assert len(recorded) == 1000
    assert sorted(queued) == sorted(recorded)  # every job on the queue exactly once
    assert client.batch(batch_id).enqueuing().done


def test_an_enqueue_stopped_by_an_error_marks_its_batch_and_resumes_after_the_fix(
        redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path) -> None:
    queue = f"stopped-{uuid.uuid4().hex[:8]}"
    with make_stack(redis_server.url, loopback_api, tmp_path, REQWORKER_QUEUE=queue) as stack:
        client, store = stack.client, stack.client.store
        jobs = [(n, {"api": "fast", "path": f"/echo/{queue}/{n}"}) for n in range(1, 701)]

        def unreadable_at_600() -> Iterator[tuple[int, Any]]:
            for n, job in jobs:
                if n == 600:
                    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                yield n, job

        with pytest.raises(UnicodeDecodeError):
            client.submit_numbered(unreadable_at_600(), name="bad bytes")
        batch_id = store.client.zrange(store.keys.batches(), 0, -1)[0].decode()
        status = run_cli(stack.env, "status", batch_id)
        enqueuing = client.batch(batch_id).enqueuing()
        # what was published may finish: waiting on the batch does not hang on the rest
        assert enqueuing.done
        assert not enqueuing.interrupted
        assert "enqueue stopped at line 501: UnicodeDecodeError" in status.stdout
        report = client.resume(batch_id, jobs)
        queued = len(job_ids(store.client.lrange(queue, 0, -1)))
        store.client.delete(queue)
    assert report.accepted == 200
    assert queued == 700
    assert client.batch(batch_id).enqueuing().describe(batch_id) is None


def test_a_chunk_is_pushed_and_noted_together_where_the_broker_is_the_batch_redis(
        redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path) -> None:
    """Then no chunk is ever in doubt: the default set-up (one Redis for everything)."""
    with make_stack(redis_server.url, loopback_api, tmp_path) as stack:
        publisher, store = stack.client.publisher, stack.client.store
        assert isinstance(publisher, RedisBulkPublisher)
        assert publisher.shares(store.url)
        assert not publisher.shares(redis_server.url.rsplit("/", 1)[0] + "/1")
