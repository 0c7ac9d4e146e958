"""Batches through the command line, workers that die, and workers that refuse to start."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.batches import BatchStore
from producer.client import Client
from producer.demo.localredis import LocalRedis
from tests.support import eventually, run_cli
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import TOKEN, Stack, make_stack
from worker.keys import Keys
from worker.profiles import load_profiles
from worker.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path) as s:
        yield s


def test_the_cache_is_shared_across_worker_processes(stack: Stack) -> None:
    path = f"/echo/shared/{uuid.uuid4().hex}"
    first = stack.worker("a", concurrency=2)
    try:
        assert stack.run({"api": "fast", "path": path})["from_cache"] is False
    finally:
        first.stop()
    second = stack.worker("b", concurrency=2)
    try:
        record = stack.run({"api": "fast", "path": path})
    finally:
        second.stop()
    assert record["from_cache"] is True
    assert len(stack.api.hits(path)) == 1


def _batch_lines(run: str) -> tuple[list[str], dict[int, str]]:
    """200 lines: good jobs of several outcomes, and bad lines with what must be named."""
    lines: list[str] = []
    bad: dict[int, str] = {}
    for i in range(200):
        n = i + 1
        if i % 20 == 3:
            lines.append(json.dumps({"api": "fast", "path": f"/echo/{run}/{i}",
                                     "headers": {"Authorization": "Bearer x"}, "key": f"k{i}"}))
            bad[n] = "headers.Authorization"
        elif i % 20 == 7:
            lines.append(json.dumps({"api": "nope", "path": "/x", "key": f"k{i}"}))
            bad[n] = "'api'"
        elif i % 40 == 11:
            lines.append('{"api": "fast", "path": ')
            bad[n] = "not valid JSON"
        elif i % 40 == 31:
            lines.append(json.dumps({"api": "fast", "url": "http://evil.example/x"}))
            bad[n] = "'url'"
        elif i % 10 == 5:
            lines.append(json.dumps({"api": "fast", "path": f"/missing/{run}/{i}", "key": f"k{i}"}))
        else:
            lines.append(json.dumps({"api": "fast", "path": f"/echo/{run}/{i}", "key": f"k{i}"}))
    return lines, bad


def test_a_batch_of_200_mixed_jobs_ends_with_every_result_retrievable(
        stack: Stack, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    lines, bad = _batch_lines(run)
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]) + "\n")
    worker = stack.worker("batch", concurrency=8)
    try:
        done = run_cli(stack.env, "enqueue", str(jobs_file), "--name", "mixed", "--wait")
    finally:
        worker.stop()
    assert done.returncode == 2, done.stderr
    batch_id = done.stdout.strip()
    refused = [line for line in done.stderr.splitlines() if line.startswith("refused ")]
    assert len(refused) == len(bad)
    for number, words in bad.items():
        # one blank line after line 100 shifts the numbering of the file
        shown = number + (1 if number > 100 else 0)
        assert any(f"line {shown}:" in r and words in r for r in refused), (number, refused)

    status = run_cli(stack.env, "status", batch_id, "--json")
    counts = json.loads(status.stdout)
    good = 200 - len(bad)
    missing = sum(1 for i in range(200) if i % 10 == 5 and (i + 1) not in bad)
    assert counts["total"] == good
    assert counts["refused"] == len(bad)
    assert (counts["succeeded"], counts["failed"]) == (good - missing, missing)
    assert counts["pending"] == counts["retrying"] == 0
    assert counts["name"] == "mixed"

    out = tmp_path / "results.jsonl"
    results = run_cli(stack.env, "results", batch_id, "-o", str(out))
    assert results.returncode == 1  # some jobs failed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == good
    assert len({r["key"] for r in records}) == good
    assert {r["batch_id"] for r in records} == {batch_id}
    assert sum(not r["ok"] for r in records) == missing
    failed = run_cli(stack.env, "results", batch_id, "--failed")
    assert len(failed.stdout.splitlines()) == missing


def test_a_worker_killed_outright_loses_no_job(stack: Stack, broker: dict[str, str],
                                               tmp_path: Path) -> None:
    """kill -9 of the whole worker mid-request: another worker finishes the job.

    On Redis the job comes back after the visibility timeout; on RabbitMQ at once.
    """
    env = dict(stack.env, REQWORKER_VISIBILITY_TIMEOUT="15", **broker)
    apis = tmp_path / "quick.toml"
    apis.write_text(f'[apis.fast]\nbase_url = "{stack.api.url}"\ntimeout = 5\n'
                    "backoff = { start = 0.05, factor = 2, count = 2 }\n")
    env["REQWORKER_APIS"] = str(apis)
    client = Client(Settings.from_env(env), load_profiles(apis, env))
    quick = Stack(stack.api, env, client, tmp_path)
    path = f"/kill/{uuid.uuid4().hex}"
    stack.api.script(path, Reply(delay_s=30, json={"first": 1}), Reply(json={"second": 1}))
    doomed = quick.worker("doomed", concurrency=2)
    try:
        batch, _ = client.submit({"api": "fast", "url": f"{stack.api.url}{path}"})
        eventually(lambda: stack.api.hits(path), what="the first attempt reaching the API")
    finally:
        doomed.kill()
    survivor = quick.worker("survivor", concurrency=2)
    try:
        batch.wait(poll_s=0.2, timeout_s=180)
    finally:
        survivor.stop()
    record = next(batch.results())
    assert record["ok"] is True
    assert record["body"] == {"second": 1}
    assert len(stack.api.hits(path)) == 2


def test_a_worker_refuses_a_visibility_timeout_one_attempt_could_outlast(stack: Stack) -> None:
    env = dict(stack.env, REQWORKER_VISIBILITY_TIMEOUT="14")  # the stack's profiles: timeout 5
    done = run_cli(env, "worker")
    assert done.returncode == 2
    assert "REQWORKER_VISIBILITY_TIMEOUT" in done.stderr
    assert "run twice" in done.stderr


def test_bad_profiles_stop_the_worker_with_a_clear_message(stack: Stack, tmp_path: Path) -> None:
    apis = tmp_path / "broken.toml"
    apis.write_text('[apis.x]\nbase_url = "http://127.0.0.1:9"\n[apis.x.auth]\nkind = "bearer"\n'
                    'token = "${NOT_SET_ANYWHERE}"\n')
    done = run_cli(dict(stack.env, REQWORKER_APIS=str(apis)), "worker")
    assert done.returncode == 2
    assert "NOT_SET_ANYWHERE" in done.stderr


def test_unknown_batch_is_bad_input(stack: Stack) -> None:
    done = run_cli(stack.env, "status", "no-such-batch")
    assert done.returncode == 2
    assert "no batch 'no-such-batch'" in done.stderr


def test_request_prints_the_result_and_exits_by_outcome(stack: Stack) -> None:
    worker = stack.worker("req", concurrency=2)
    try:
        ok = run_cli(stack.env, "request", "GET", f"/echo/{uuid.uuid4().hex}", "--api", "fast",
                     "-p", "q=1", "--key", "mine")
        path = f"/gone/{uuid.uuid4().hex}"
        stack.api.script(path, Reply(410, json={"error": {"message": "gone for good"}}))
        failed = run_cli(stack.env, "request", "GET", path, "--api", "fast")
    finally:
        worker.stop()
    assert ok.returncode == 0, ok.stderr
    record = json.loads(ok.stdout)
    assert record["key"] == "mine"
    assert record["body"]["query"] == "q=1"
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["message"] == "gone for good"


def test_job_arguments_in_events_show_the_job_and_no_secret(stack: Stack) -> None:
    """What Flower shows comes from task events: the job summary, never a token.

    Jobs go out in pipelined bulk, without a task-sent event each; Flower knows a
    job from the moment a worker receives it.
    """
    from producer.celeryapp import make_app
    from worker.settings import Settings

    app = make_app(Settings.from_env(stack.env))
    seen: list[dict[str, object]] = []
    worker = stack.worker("events", concurrency=2)
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": seen.append})
        listener = threading.Thread(target=recv.capture, kwargs={"limit": None}, daemon=True)
        listener.start()
        try:
            # a heartbeat proves the listener is subscribed before the job's events go out
            eventually(lambda: any(e.get("type") == "worker-heartbeat" for e in seen),
                       what="a worker heartbeat event")
            path = f"/secure/ev/{uuid.uuid4().hex}"
            stack.api.script(path, Reply(json={"fine": True}))
            record = stack.run({"api": "bearer", "path": path[len("/secure"):], "key": "ev"})
            eventually(lambda: any(e.get("type") == "task-succeeded"
                                   and e.get("uuid") == record["job_id"] for e in seen),
                       what="the task-succeeded event")
        finally:
            recv.should_stop = True
            worker.stop()
            listener.join(timeout=10)
    mine = [e for e in seen if e.get("uuid") == record["job_id"]]
    kinds = {e["type"] for e in mine}
    assert {"task-received", "task-succeeded"} <= kinds
    received = next(e for e in mine if e["type"] == "task-received")
    assert "bearer GET" in str(received["kwargs"])
    assert "key=ev" in str(received["kwargs"])
    assert TOKEN not in json.dumps(seen, default=str)


def test_a_redelivered_job_that_already_finished_is_not_run_again(stack: Stack) -> None:
    """The message of a finished job comes back (its worker died before acknowledging it)."""
    from celery import states

    from producer.publish import Outgoing, RedisBulkPublisher

    path = f"/echo/again/{uuid.uuid4().hex}"
    job_id = str(uuid.uuid4())
    stored = {"key": "done", "ok": True}
    stack.client.app.backend.store_result(job_id, stored, states.SUCCESS)
    publisher = stack.client.publisher
    assert isinstance(publisher, RedisBulkPublisher)
    job = {"api": "fast", "url": f"{stack.api.url}{path}"}
    message = json.loads(publisher.envelope(Outgoing(job_id, {"job": job}, "again")))
    message["properties"]["delivery_info"]["redelivered"] = True
    publisher.client.lpush(publisher.queue, json.dumps(message))
    worker = stack.worker("again", concurrency=2)
    try:
        eventually(lambda: f"job {job_id} already finished" in worker.log(),
                   what="the worker noticing the repeated delivery")
    finally:
        worker.stop()
    assert stack.api.hits(path) == []
    assert stack.client.app.backend.get_task_meta(job_id)["result"] == stored


def test_a_claimed_fingerprint_names_the_first_job_within_a_chunk_and_across_chunks(
        client: redis.Redis[bytes], keys: Keys) -> None:
    store = BatchStore(client, keys, 60, lambda job_id: f"meta-{job_id}")
    assert store.claim("b", [("f1", "j1"), ("f2", "j2"), ("f1", "j3")]) == [None, None, "j1"]
    assert store.claim("b", [("f2", "j4"), ("f3", "j5"), ("f3", "j6")]) == ["j2", None, "j5"]
    assert store.claim("other", [("f1", "j7")]) == [None]
    assert store.claim("b", []) == []
    assert 0 < client.ttl(keys.batch_seen("b")) <= 60
