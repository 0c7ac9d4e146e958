"""A real worker process against a loopback API and a private redis-server (and RabbitMQ).

Countdowns are asserted as the values the task asked Celery for, never as time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import TOKEN, Stack, countdowns, make_stack, one_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI, broker: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The core end-to-end tests run once on each broker (Redis; RabbitMQ where reachable)."""
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("e2e"), **broker) as s:
        yield s


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    yield from one_worker(stack, concurrency=4)


def unique(prefix: str = "/r") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def test_500_four_times_then_200_succeeds_on_the_fifth_attempt(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, *[Reply(500)] * 4, Reply(json={"n": 5}))
    record = stack.run({"api": "fast", "path": path, "key": "k1"})
    assert record["ok"] is True
    assert record["body"] == {"n": 5}
    assert record["attempts"] == 5
    assert record["key"] == "k1"
    assert record["status_code"] == 200
    assert len(stack.api.hits(path)) == 5
    assert countdowns(worker.log(), record["job_id"]) == pytest.approx([0.05, 0.1, 0.2, 0.4])


def test_a_job_that_always_fails_is_tried_count_plus_one_times(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(503, json={"error": {"message": "down"}}))
    record = stack.run({"api": "fast", "path": path})
    assert record["ok"] is False
    assert record["attempts"] == 5 == len(stack.api.hits(path))
    assert record["error"]["type"] == "APIError"
    assert record["error"]["status_code"] == 503
    assert "max retries exceeded" in record["error"]["message"]
    assert countdowns(worker.log(), record["job_id"]) == pytest.approx([0.05, 0.1, 0.2, 0.4])


def test_404_fails_after_one_attempt_with_the_apis_message(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(404, json={"error": {"status": 404, "message": "no such track"}}))
    record = stack.run({"api": "fast", "path": path})
    assert record["ok"] is False
    assert record["attempts"] == 1
    assert record["error"] == {"type": "APIError", "status_code": 404, "message": "no such track"}
    assert len(stack.api.hits(path)) == 1


def test_401_with_a_static_bearer_token_fails_clearly(stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/secure/r")
    stack.api.script(path, Reply(401, json={"error": {"message": "invalid access token"}}))
    record = stack.run({"api": "bearer", "path": path[len("/secure"):]})
    assert record["ok"] is False
    assert record["status_code"] == 401
    assert record["attempts"] == 1
    message = record["error"]["message"]
    assert "invalid access token" in message
    assert "'bearer'" in message
    assert "cannot be renewed" in message
    assert stack.api.hits(path)[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(record)


def test_retry_after_2_is_honoured_as_the_countdown(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(429, headers={"Retry-After": "2"}), Reply(json={"ok": True}))
    record = stack.run({"api": "seed", "path": path})
    assert record["ok"] is True
    assert record["attempts"] == 2
    assert countdowns(worker.log(), record["job_id"]) == [2.0]


def test_retry_after_10000_fails_at_once(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(429, headers={"Retry-After": "10000"}))
    record = stack.run({"api": "seed", "path": path})
    assert record["ok"] is False
    assert record["attempts"] == 1
    assert record["error"]["status_code"] == 429
    assert "Retry-After" in record["error"]["message"]
    assert countdowns(worker.log(), record["job_id"]) == []


def test_a_connection_reset_is_retried_for_get(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(reset=True), Reply(json={"ok": 1}))
    record = stack.run({"api": "fast", "path": path})
    assert record["ok"] is True
    assert record["attempts"] == 2


def test_a_post_is_not_retried_after_a_reset_unless_the_job_allows_it(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(reset=True), Reply(json={"created": 1}))
    record = stack.run({"api": "fast", "method": "POST", "path": path, "json": {"a": 1}})
    assert record["ok"] is False
    assert record["attempts"] == 1
    assert "retry_unsafe" in record["error"]["message"]
    path = unique()
    stack.api.script(path, Reply(reset=True), Reply(json={"created": 1}))
    record = stack.run({"api": "fast", "method": "POST", "path": path, "json": {"a": 1},
                        "retry_unsafe": True})
    assert record["ok"] is True
    assert record["attempts"] == 2


def test_a_post_is_retried_on_429(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(429), Reply(201, json={"created": 1}))
    record = stack.run({"api": "fast", "method": "POST", "path": path, "json": {}})
    assert record["ok"] is True
    assert record["status_code"] == 201
    assert record["attempts"] == 2


def test_a_slow_answer_times_out_and_is_retried(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    # The second answer comes at once, well within the 2 s a busy machine may need.
    stack.api.script(path, Reply(delay_s=10, json={"late": 1}), Reply(json={"on_time": 1}))
    record = stack.run({"api": "slow", "path": path})
    assert record["ok"] is True
    assert record["body"] == {"on_time": 1}
    assert record["attempts"] == 2


def test_redirects_are_followed_except_for_head(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(302, headers={"Location": "/echo/landed"}))
    record = stack.run({"api": "fast", "path": path, "cache": False})
    assert record["ok"] is True
    assert record["body"]["path"] == "/echo/landed"
    record = stack.run({"api": "fast", "method": "HEAD", "path": path})
    assert record["ok"] is True
    assert record["status_code"] == 302


def test_text_bodies_come_back_as_text(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(text="plain words"))
    assert stack.run({"api": "fast", "path": path})["body"] == "plain words"


def test_the_second_identical_get_comes_from_the_cache(stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/echo")
    first = stack.run({"api": "fast", "path": path, "params": {"q": "x"}})
    second = stack.run({"api": "fast", "path": path, "params": {"q": "x"}})
    assert (first["from_cache"], second["from_cache"]) == (False, True)
    assert second["body"] == first["body"]
    assert len(stack.api.hits(path)) == 1
    other = stack.run({"api": "fast", "path": path, "params": {"q": "y"}})
    assert other["from_cache"] is False
    assert len(stack.api.hits(path)) == 2


def test_post_is_never_cached(stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/echo")
    records = [stack.run({"api": "fast", "method": "POST", "path": path, "json": {"a": 1}})
               for _ in range(2)]
    assert [r["from_cache"] for r in records] == [False, False]
    assert len(stack.api.hits(path)) == 2


def test_refresh_bypasses_the_cache_and_stores_the_new_answer(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(json={"v": 1}), Reply(json={"v": 2}))
    assert stack.run({"api": "fast", "path": path})["body"] == {"v": 1}
    refreshed = stack.run({"api": "fast", "path": path, "refresh": True})
    assert refreshed["body"] == {"v": 2}
    assert refreshed["from_cache"] is False
    again = stack.run({"api": "fast", "path": path})
    assert again["body"] == {"v": 2}
    assert again["from_cache"] is True
    assert len(stack.api.hits(path)) == 2


def test_cache_false_always_reaches_the_api(stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/echo")
    for _ in range(2):
        assert stack.run({"api": "fast", "path": path, "cache": False})["from_cache"] is False
    assert len(stack.api.hits(path)) == 2


def test_no_credential_is_stored_in_redis_even_through_a_redirect(
        stack: Stack, worker: WorkerProcess, redis_server: LocalRedis) -> None:
    hop, landing = unique("/secure/hop"), unique("/secure/echo")
    stack.api.script(hop, Reply(301, headers={"Location": landing}))
    stack.api.script(landing, Reply(json={"fine": True}))
    record = stack.run({"api": "bearer", "path": hop[len("/secure"):]})
    assert record["ok"] is True
    assert stack.api.hits(landing)[0].headers["Authorization"] == f"Bearer {TOKEN}"
    again = stack.run({"api": "bearer", "path": hop[len("/secure"):]})
    assert again["from_cache"] is True
    client = redis.Redis.from_url(redis_server.url)
    leaks = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        else:
            continue
        leaks += [key for value in values if TOKEN.encode() in value]
    assert leaks == []
    assert TOKEN not in worker.log()


def test_a_redirect_off_base_url_drops_the_credentials(stack: Stack, worker: WorkerProcess) -> None:
    hop = unique("/secure/hop")
    outside = unique("/echo/outside")
    stack.api.script(hop, Reply(302, headers={"Location": outside}))
    record = stack.run({"api": "bearer", "path": hop[len("/secure"):], "cache": False})
    assert record["ok"] is True
    assert "Authorization" not in stack.api.hits(outside)[0].headers
