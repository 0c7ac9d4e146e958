"""Messages no worker can run are set aside; the worker goes on (real worker, private Redis)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, eventually, run_cli
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack, one_worker
from worker.jobs import TASK_NAME
from worker.settings import Settings

pytestmark = pytest.mark.integration

#: Put in every poison message: it must never reach the worker's log.
MARKER = "poison-payload-7c1d"


def envelope(body: str, task: str = TASK_NAME) -> str:
    return json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"task": task, "id": str(uuid.uuid4()), "marker": MARKER},
        "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                       "delivery_info": {"exchange": "", "routing_key": "x"}, "priority": 0},
    })


POISON: dict[str, bytes] = {
    "body is not base64": envelope(f"!!{MARKER}!!").encode(),
    "a JSON array": json.dumps([MARKER, 1, 2]).encode(),
    "text that is not JSON": f"hello {MARKER}".encode(),
    "bytes that are not UTF-8": b"\xff\xfe" + MARKER.encode(),
    "a body that is not JSON": envelope(base64.b64encode(MARKER.encode()).decode()).encode(),
    "another task": envelope(base64.b64encode(b"[[], {}, {}]").decode(), task="other.task").encode(),
}


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("poison"),
                    REQWORKER_QUEUE=f"poison-{uuid.uuid4().hex[:6]}") as s:
        yield s


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    yield from one_worker(stack, concurrency=2)


@pytest.mark.parametrize("kind", list(POISON))
def test_poison_is_set_aside_and_the_next_job_runs(stack: Stack, worker: WorkerProcess,
                                                   kind: str) -> None:
    settings = Settings.from_env(stack.env)
    broker = redis.Redis.from_url(settings.broker_url)
    before = int(broker.get(f"{settings.queue}:dead:count") or 0)
    broker.lpush(settings.queue, POISON[kind])
    eventually(lambda: int(broker.get(f"{settings.queue}:dead:count") or 0) == before + 1,
               what=f"{kind} set aside")
    path = f"/after/{uuid.uuid4().hex}"
    stack.api.script(path, Reply(json={"fine": True}))
    record = stack.run({"api": "fast", "path": path})
    assert record["ok"] is True
    assert worker.proc.poll() is None, worker.log()
    assert MARKER not in worker.log()
    assert "refused a message from queue" in worker.log()


def test_dead_letters_lists_what_was_set_aside(stack: Stack, worker: WorkerProcess) -> None:
    settings = Settings.from_env(stack.env)
    redis.Redis.from_url(settings.broker_url).lpush(settings.queue, POISON["a JSON array"])
    shown = eventually(lambda: (r := run_cli(stack.env, "dead-letters")).stdout.count("bytes") and r,
                       what="a dead letter listed")
    assert shown.returncode == 0
    assert "the message is a JSON list, not an object" in shown.stdout
    assert MARKER not in shown.stdout  # the plain listing shows no payload
    as_json = run_cli(stack.env, "dead-letters", "--json", "--limit", "1")
    entry = json.loads(as_json.stdout.splitlines()[0])
    assert entry["queue"] == settings.queue
    assert MARKER in entry["message"]


def test_dead_letters_are_bounded_and_expire(stack: Stack) -> None:
    settings = Settings.from_env(stack.env)
    broker = redis.Redis.from_url(settings.broker_url)
    assert 0 < broker.ttl(f"{settings.queue}:dead") <= 7 * 24 * 3600
    assert 0 < broker.ttl(f"{settings.queue}:dead:count") <= 7 * 24 * 3600


def test_dead_letters_on_rabbitmq_says_where_they_are_kept(stack: Stack, tmp_path: Path) -> None:
    done = run_cli(dict(stack.env, REQWORKER_BROKER_URL="amqp://guest:guest@127.0.0.1:1//"),
                   "dead-letters")
    assert done.returncode == 2
    assert "only on a Redis broker" in done.stderr
