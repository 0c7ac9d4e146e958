"""A careless operator: Flower without a login, its open API switch, the example's password;
and keys reqworker writes that must not grow for ever."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.demo.localredis import LocalRedis, free_port
from producer.flower import AUTH_ENV, FLOWER_AUTH_ENV, FlowerConfigError, plan_flower
from tests.support import WorkerProcess, run_cli
from tests.support.flower import FlowerProcess
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack, one_worker
from worker.keys import Keys

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_flowers_unauthenticated_api_switch_is_refused(value: str) -> None:
    with pytest.raises(FlowerConfigError, match="FLOWER_UNAUTHENTICATED_API"):
        plan_flower(5555, "127.0.0.1", {"FLOWER_UNAUTHENTICATED_API": value, AUTH_ENV: "a:b"})


@pytest.mark.parametrize("value", ["admin:change-me", "a:b,admin:CHANGE-ME", "x:changeme"])
def test_the_examples_placeholder_password_is_refused(value: str) -> None:
    with pytest.raises(FlowerConfigError, match="placeholder"):
        plan_flower(5555, "127.0.0.1", {AUTH_ENV: value})


def test_the_example_env_file_ships_no_working_password() -> None:
    example = (DEPLOY / "reqworker.env.example").read_text()
    login = re.search(rf"^{AUTH_ENV}=(.*)$", example, re.MULTILINE)
    assert login is not None
    with pytest.raises(FlowerConfigError):
        plan_flower(5555, "127.0.0.1", {AUTH_ENV: login.group(1)})


def test_without_a_login_one_is_made_up_each_time() -> None:
    first, second = (plan_flower(5555, "127.0.0.1", {}) for _ in range(2))
    made = first.env[FLOWER_AUTH_ENV]
    assert made.startswith("reqworker:")
    assert len(made.split(":", 1)[1]) >= 20
    assert made != second.env[FLOWER_AUTH_ENV]
    assert sum(made in notice for notice in first.notices) == 1


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("ops")) as s:
        yield s


@pytest.mark.integration
@pytest.mark.parametrize("extra", [{"FLOWER_UNAUTHENTICATED_API": "true"},
                                   {AUTH_ENV: "admin:change-me"}])
def test_reqworker_flower_refuses_to_start_open(stack: Stack, extra: dict[str, str]) -> None:
    done = run_cli({**stack.env, **extra}, "flower", "--port", str(free_port()), timeout_s=60)
    assert done.returncode == 2
    assert next(iter(extra)) in done.stderr


@pytest.mark.integration
def test_reqworker_flower_without_a_login_requires_the_one_it_printed(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k not in (AUTH_ENV, FLOWER_AUTH_ENV)}
    flower = FlowerProcess(env, stack.tmp / "flower-made-up.log").wait_ready()
    try:
        found = re.findall(r"login is (reqworker):(\S+) ", flower.log())
        assert len(found) == 1
        assert flower.get("/api/workers", auth=None).status_code == 401
        assert flower.get("/api/workers", auth=found[0]).status_code == 200
    finally:
        flower.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    yield from one_worker(stack, concurrency=2)


@pytest.mark.integration
def test_every_key_reqworker_writes_expires(
        stack: Stack, worker: WorkerProcess, redis_server: LocalRedis) -> None:
    run = f"/r/{uuid.uuid4().hex[:8]}"
    stack.api.script(f"{run}/retry", Reply(500), Reply(json={"ok": 1}))
    stack.api.script(f"{run}/paused", Reply(429, headers={"Retry-After": "1"}), Reply(json={}))
    stack.api.script(f"{run}/pages", Reply(json={"next": f"{run}/pages2"}))
    stack.api.script(f"{run}/pages2", Reply(json={"next": None}))
    stack.api.script(f"{run}/moved", Reply(301, headers={"Location": f"{run}/pages2"}))
    jobs = [{"api": "fast", "path": f"{run}/retry"}, {"api": "seed", "path": f"{run}/paused"},
            {"api": "fast", "path": f"{run}/pages", "paginate": {"next": "$.next"}},
            {"api": "fast", "path": f"{run}/moved"}, {"api": "fast", "path": f"{run}/missing"},
            {"api": "bearer", "path": f"{run}/secure"}]
    report = stack.client.submit_many(jobs, name="expiring")
    report.batch.wait(poll_s=0.05, timeout_s=120)
    client = redis.Redis.from_url(redis_server.url)
    prefix = stack.env["REQWORKER_KEY_PREFIX"]
    ids = [r["job_id"] for r in report.batch.results()]
    mine = [*client.scan_iter(f"{prefix}:*"),
            *(key for i in ids for key in client.scan_iter(f"*{i}*"))]
    assert any(key.endswith(b":batches") for key in mine)
    assert any(b":cache:" in key for key in mine)
    assert any(b"celery-task-meta" in key for key in mine)
    forever = [key for key in mine if client.ttl(key) == -1]
    assert forever == []


@pytest.mark.integration
def test_the_batch_index_forgets_batches_whose_records_expired(
        stack: Stack, redis_server: LocalRedis) -> None:
    client = redis.Redis.from_url(redis_server.url)
    index = Keys(stack.env["REQWORKER_KEY_PREFIX"]).batches()
    client.zadd(index, {"ancient": time.time() - stack.client.store.ttl_s - 60})
    stack.client.submit_many([{"api": "fast", "path": "/echo/index"}], name="new")
    assert client.zscore(index, "ancient") is None
    assert 0 < client.ttl(index) <= stack.client.store.ttl_s
