"""Flower for this app: how ``reqworker flower`` starts it, and the real Flower reading real jobs.

The end-to-end tests start ``reqworker flower`` against the suite's private Redis, a
real worker and the loopback API, run jobs through ``producer.client``, and read them
back through Flower's REST API with basic auth. Flower learns of jobs from events a
moment after they happen, so every read polls with a generous, bounded wait.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producer.demo.localredis import LocalRedis, free_port
from producer.flower import (
    AUTH_ENV,
    FLOWER_AUTH_ENV,
    LOOPBACK,
    FlowerConfigError,
    parse_basic_auth,
    plan_flower,
)
from tests.support import WorkerProcess, eventually, run_cli
from tests.support.flower import PASSWORD, USER, FlowerProcess
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import TOKEN, Stack, make_stack
from worker.jobs import TASK_NAME
from worker.keys import Keys
from worker.ratelimit import RateLimiter
from worker.settings import Settings
from worker.urls import is_loopback

# --- how the command starts Flower (no processes) ---------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::", "10.1.2.3", "flower.example.com"])
def test_addresses_beyond_this_machine(address: str) -> None:
    assert not is_loopback(address)


def test_the_login_goes_to_flower_in_the_environment_never_on_the_command_line() -> None:
    plan = plan_flower(5601, "0.0.0.0", {AUTH_ENV: f" {USER}:{PASSWORD} , b:c:d", "PATH": "/bin"},
                       python="/py")
    assert plan.argv == ["/py", "-m", "celery", "-A", "worker.app", "flower", "--port=5601",
                         "--address=0.0.0.0"]
    assert plan.env[FLOWER_AUTH_ENV] == f"{USER}:{PASSWORD},b:c:d"
    assert plan.env["PATH"] == "/bin"
    assert plan.login
    assert plan.address == "0.0.0.0"
    assert not plan.notices
    assert not any(PASSWORD in arg for arg in plan.argv)


def test_without_a_login_flower_listens_on_loopback_only_and_says_so() -> None:
    plan = plan_flower(5555, "0.0.0.0", {FLOWER_AUTH_ENV: ""})
    assert plan.address == LOOPBACK
    assert "--address=127.0.0.1" in plan.argv
    assert not plan.login
    assert plan.env[FLOWER_AUTH_ENV].startswith("reqworker:")
    assert len(plan.notices) == 2
    assert plan.env[FLOWER_AUTH_ENV] in plan.notices[0]  # the made-up login, shown once
    assert AUTH_ENV in plan.notices[1]
    assert "127.0.0.1 only" in plan.notices[1]
    assert "0.0.0.0" in plan.notices[1]


def test_on_loopback_without_a_login_it_still_says_there_is_none() -> None:
    plan = plan_flower(5555, "127.0.0.1", {})
    assert plan.address == LOOPBACK
    assert not plan.login
    assert any(AUTH_ENV in notice for notice in plan.notices)


def test_flowers_own_variable_is_honoured() -> None:
    plan = plan_flower(5555, "0.0.0.0", {FLOWER_AUTH_ENV: "a:b"})
    assert plan.login
    assert plan.address == "0.0.0.0"
    assert plan.env[FLOWER_AUTH_ENV] == "a:b"


@pytest.mark.parametrize("value", ["justme7", ":pw7", "me7:", "me7:pw7,,you7:pw8", "me7:pw7,you7"])
def test_a_malformed_login_is_refused_without_repeating_it(value: str) -> None:
    with pytest.raises(FlowerConfigError) as caught:
        plan_flower(5555, "0.0.0.0", {AUTH_ENV: value})
    assert AUTH_ENV in str(caught.value)
    assert value not in str(caught.value)


def test_parse_basic_auth_keeps_colons_in_passwords() -> None:
    assert parse_basic_auth("a:b:c") == ["a:b:c"]


# --- the real Flower ----------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (from /proc/net/tcp*)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                host, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(host)
    return found


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("flower")
    with make_stack(redis_server.url, loopback_api, tmp,
                    **{AUTH_ENV: f"{USER}:{PASSWORD}"}) as s:
        yield s


@pytest.fixture(scope="module")
def node() -> str:
    return f"celery@flowertest-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[FlowerProcess]:
    proc = FlowerProcess(stack.env, stack.tmp / "flower.log").wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack, flower: FlowerProcess, node: str) -> Iterator[WorkerProcess]:
    proc = stack.worker("flower-worker", concurrency=4, hostname=node)

    def heard_from_worker() -> bool:
        # The worker shown online in /metrics: Flower's event receiver has heard its
        # heartbeat, so the events of the jobs run from here on reach it.
        return f'flower_worker_online{{worker="{node}"}} 1.0' in flower.get("/metrics").text

    eventually(heard_from_worker, within_s=90, every_s=0.5, what="Flower hearing the worker")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def jobs(stack: Stack, worker: WorkerProcess) -> dict[str, dict[str, Any]]:
    """Jobs of several outcomes on the bearer profile, run to the end: job id -> facts."""
    run = uuid.uuid4().hex[:8]
    specs: list[dict[str, Any]] = [
        {"method": "GET", "key": f"get-{run}", "replies": [Reply(json={"n": 1})],
         "state": "SUCCESS"},
        {"method": "POST", "key": f"post-{run}", "replies": [Reply(201, json={"made": 1})],
         "state": "SUCCESS", "json": {"name": "x"}},
        {"method": "GET", "key": f"retry-{run}", "replies": [Reply(503), Reply(json={"n": 2})],
         "state": "SUCCESS"},
        {"method": "DELETE", "key": f"fail-{run}",
         "replies": [Reply(404, json={"error": {"message": "gone"}})], "state": "FAILURE"},
    ]
    out: dict[str, dict[str, Any]] = {}
    batches = []
    for spec in specs:
        path = f"/secure/flower/{run}/{spec['key']}"
        stack.api.script(path, *spec["replies"])
        job = {"api": "bearer", "method": spec["method"], "path": path[len("/secure"):],
               "key": spec["key"]}
        if "json" in spec:
            job["json"] = spec["json"]
        batch, job_id = stack.client.submit(job)
        batches.append(batch)
        out[job_id] = {**spec, "url": stack.api.url + path, "path": path}
    for batch in batches:
        batch.wait(poll_s=0.05, timeout_s=120)
    return out


def _task_info(flower: FlowerProcess, task_id: str) -> dict[str, Any] | None:
    answer = flower.get(f"/api/task/info/{task_id}")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    info: dict[str, Any] = answer.json()
    return info


def _flower_tasks(flower: FlowerProcess) -> dict[str, dict[str, Any]]:
    answer = flower.get("/api/tasks", params={"taskname": TASK_NAME})
    assert answer.status_code == 200, answer.text
    tasks: dict[str, dict[str, Any]] = answer.json()
    return tasks


@pytest.mark.integration
def test_flower_lists_the_worker(stack: Stack, flower: FlowerProcess, worker: WorkerProcess,
                                node: str) -> None:
    def listed() -> dict[str, Any] | None:
        answer = flower.get("/api/workers", params={"refresh": "1"})
        assert answer.status_code == 200, answer.text
        workers: dict[str, Any] = answer.json()
        return workers.get(node)

    info = eventually(listed, within_s=60, every_s=0.5, what="Flower listing the worker")
    assert TASK_NAME in info.get("registered", [])
    queue = stack.client.settings.queue
    assert any(q.get("name") == queue for q in info.get("active_queues", []))


@pytest.mark.integration
def test_flower_shows_each_job_by_name_with_its_profile_method_url_and_key(
        flower: FlowerProcess, jobs: dict[str, dict[str, Any]], node: str) -> None:
    def all_finished() -> dict[str, dict[str, Any]] | None:
        tasks = _flower_tasks(flower)
        seen = {i: tasks[i] for i in jobs if i in tasks}
        done = len(seen) == len(jobs) and all(
            seen[i].get("state") == jobs[i]["state"] for i in jobs)
        return seen if done else None

    listed = eventually(all_finished, within_s=90, every_s=0.5,
                        what="Flower seeing every job finish")
    for job_id, facts in jobs.items():
        assert listed[job_id]["name"] == TASK_NAME
        answer = flower.get(f"/api/task/info/{job_id}")
        assert answer.status_code == 200, answer.text
        info = answer.json()
        assert info["name"] == TASK_NAME
        assert info["state"] == facts["state"]
        assert info["worker"] == node
        shown = f"{info['args']} {info['kwargs']}"
        for part in ("bearer", facts["method"], facts["url"], facts["key"]):
            assert part in shown, (part, shown)
        assert TOKEN not in json.dumps(info)
    retried = next(i for i, f in jobs.items() if f["key"].startswith("retry-"))
    assert flower.get(f"/api/task/info/{retried}").json()["retries"] >= 1


@pytest.mark.integration
def test_the_token_was_sent_to_the_api_and_flower_never_shows_it(
        stack: Stack, flower: FlowerProcess, jobs: dict[str, dict[str, Any]]) -> None:
    for facts in jobs.values():
        assert stack.api.hits(facts["path"])[0].headers["Authorization"] == f"Bearer {TOKEN}"
    eventually(lambda: set(jobs) <= set(_flower_tasks(flower)), within_s=90, every_s=0.5,
               what="Flower listing every job")
    pages = ["/api/workers", "/api/tasks", "/metrics", "/tasks", "/workers",
             *[f"/api/task/info/{i}" for i in jobs]]
    for page in pages:
        answer = flower.get(page)
        assert answer.status_code == 200, (page, answer.status_code)
        assert TOKEN not in answer.text, page
        assert PASSWORD not in answer.text, page


@pytest.mark.integration
def test_without_the_login_flower_refuses(
        flower: FlowerProcess, jobs: dict[str, dict[str, Any]]) -> None:
    job_id = next(iter(jobs))
    for page in ("/api/workers", "/api/tasks", f"/api/task/info/{job_id}", "/tasks"):
        assert flower.get(page, auth=None).status_code == 401, page
        assert flower.get(page, auth=(USER, "wrong")).status_code == 401, page


@pytest.mark.integration
def test_metrics_count_the_jobs_for_prometheus(
        flower: FlowerProcess, jobs: dict[str, dict[str, Any]], node: str) -> None:
    def counted() -> bool:
        answer = flower.get("/metrics")
        assert answer.status_code == 200
        return any(line.startswith("flower_events_total{") and f'task="{TASK_NAME}"' in line
                   and 'type="task-succeeded"' in line and f'worker="{node}"' in line
                   for line in answer.text.splitlines())

    eventually(counted, within_s=60, every_s=0.5, what="a task-succeeded count in /metrics")
    text = flower.get("/metrics").text
    assert f'flower_worker_online{{worker="{node}"}} 1.0' in text
    assert "flower_task_runtime_seconds_bucket{" in text


@pytest.mark.integration
def test_without_a_login_flower_binds_loopback_only_and_says_so(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k not in (AUTH_ENV, FLOWER_AUTH_ENV)}
    proc = FlowerProcess(env, stack.tmp / "flower-open.log", address="0.0.0.0").wait_ready()
    try:
        assert "127.0.0.1 only" in proc.log()
        assert AUTH_ENV in proc.log()
        if os.path.exists("/proc/net/tcp"):
            assert listening_addresses(proc.port) == {"0100007F"}  # 127.0.0.1, nothing else
        # Without a login Flower's REST API refuses everyone.
        assert proc.get("/api/workers", auth=None).status_code == 401
    finally:
        proc.stop()


@pytest.mark.integration
def test_a_malformed_login_stops_the_command(stack: Stack) -> None:
    done = run_cli(dict(stack.env, **{AUTH_ENV: "no-password-here"}), "flower",
                   "--port", str(free_port()), timeout_s=60)
    assert done.returncode == 2
    assert AUTH_ENV in done.stderr
    assert "no-password-here" not in done.stderr


@pytest.mark.integration
def test_a_retried_job_is_shown_like_any_other(
        flower: FlowerProcess, jobs: dict[str, dict[str, Any]]) -> None:
    retried = next(i for i, f in jobs.items() if f["key"].startswith("retry-"))
    facts = jobs[retried]
    info = eventually(lambda: _task_info(flower, retried), within_s=60, every_s=0.5,
                      what="Flower knowing the retried job")
    assert info["retries"] >= 1
    shown = json.loads(info["kwargs"])
    assert shown["job"] == f"bearer GET {facts['url']} key={facts['key']}"


@pytest.mark.integration
def test_a_waiting_job_shows_what_it_waits_for(
        stack: Stack, flower: FlowerProcess, worker: WorkerProcess) -> None:
    settings = Settings.from_env(stack.env)
    RateLimiter(redis.Redis.from_url(settings.cache_url), Keys(settings.key_prefix)).pause("seed", 6)
    path = f"/flower/wait/{uuid.uuid4().hex}"
    stack.api.script(path, Reply(json={"n": 1}))
    batch, job_id = stack.client.submit({"api": "seed", "path": path})

    def waiting() -> dict[str, Any] | None:
        info = _task_info(flower, job_id)
        return info if info and info.get("state") == "RETRY" else None

    info = eventually(waiting, within_s=60, every_s=0.2, what="Flower showing the job waiting")
    assert "WaitLater" in info["exception"]
    assert "'seed' is paused" in info["exception"]
    assert batch.wait(poll_s=0.1, timeout_s=120).succeeded == 1
