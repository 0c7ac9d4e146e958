"""A real worker's Prometheus metrics against what the loopback API saw, and its JSON logs.

Each pool (threads, prefork) gets a worker of its own, with its own metrics port, in
front of a loopback API of its own, so the API's count of answers and the worker's count
of requests cover exactly the same traffic.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from producer.demo.localredis import LocalRedis, free_port
from tests.support import WorkerProcess, eventually, run_cli, stop_all
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import TOKEN, Stack, make_stack

pytestmark = pytest.mark.integration

BODY_MARKER = "body-marker-6d1f0c"


class Metrics:
    """One scrape of a worker's /metrics: samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]

    def total(self, name: str, **labels: str) -> float:
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())

    def by(self, name: str, label: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for n, lab, v in self.samples:
            if n == name and v:
                out[lab[label]] += int(v)
        return out

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


class MetricsWorker:
    def __init__(self, stack: Stack, worker: WorkerProcess, port: int) -> None:
        self.stack, self.worker, self.port = stack, worker, port

    def scrape(self) -> Metrics:
        response = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10)
        response.raise_for_status()
        return Metrics(response.text)


@pytest.fixture(scope="module", params=["threads", "prefork"])
def served(request: pytest.FixtureRequest, redis_server: LocalRedis,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsWorker]:
    pool = request.param
    port = free_port()
    with LoopbackAPI() as api, make_stack(redis_server.url, api, tmp_path_factory.mktemp(pool),
                                          REQWORKER_METRICS_PORT=str(port),
                                          REQWORKER_LOG_FORMAT="json", REQWORKER_QUEUE=_queue()) as stack:
        worker = stack.worker(f"metrics-{pool}", concurrency=2, pool=pool)
        try:
            yield MetricsWorker(stack, worker, port)
        finally:
            worker.stop()


def _queue() -> str:
    """A queue of this stack's own: another module-scoped worker must not take its jobs."""
    return f"metrics-{uuid.uuid4().hex[:8]}"


def _path() -> str:
    return f"/m/{uuid.uuid4().hex[:12]}"


def _run_batch(stack: Stack, jobs: Iterable[Mapping[str, object]]) -> list[dict[str, object]]:
    report = stack.client.submit_many(jobs)
    report.batch.wait(poll_s=0.05, timeout_s=120)
    return list(report.batch.results())


def test_metrics_count_what_the_api_saw(served: MetricsWorker) -> None:
    stack = served.stack
    before = served.scrape()
    again, flaky, limited, reset, missing = (_path() for _ in range(5))
    stack.api.script(again, Reply(json={"ok": 1}))
    stack.api.script(flaky, Reply(500), Reply(500), Reply(json={"ok": 2}))
    stack.api.script(limited, Reply(429), Reply(json={"ok": 3}))
    stack.api.script(reset, Reply(reset=True), Reply(json={"ok": 4}))
    stack.api.script(missing, Reply(404, json={"error": {"message": "gone"}}))
    first = _run_batch(stack, [{"api": "fast", "path": p} for p in (again, flaky, limited, reset, missing)]
                       + [{"api": "fast", "method": "POST", "path": "/echo/m", "json": {"a": 1}}])
    second = _run_batch(stack, [{"api": "fast", "path": again}])
    assert second[0]["from_cache"] is True

    def settled() -> Metrics | None:
        after = served.scrape()
        ended = after.total("reqworker_jobs_total") - before.total("reqworker_jobs_total")
        return after if ended >= len(first) + len(second) else None

    after: Metrics = eventually(settled, within_s=60, what="job counters")
    # Every answer the API gave is a request the worker counted, by status, across all
    # the pool's processes; a reset connection is an "error".
    seen = stack.api.answers()
    seen["error"] = seen.pop("reset", 0)
    assert after.by("reqworker_requests_total", "status") == +seen
    assert after.total("reqworker_requests_total", status="429") == seen["429"] >= 1
    assert after.total("reqworker_request_duration_seconds_count") == seen.total()

    def delta(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    records = first + second
    assert delta("reqworker_jobs_total", api="fast", outcome="succeeded") == \
        sum(1 for r in records if r["ok"]) == 6
    assert delta("reqworker_jobs_total", api="fast", outcome="failed") == 1
    assert delta("reqworker_retries_total", api="fast") == 4  # 500 twice, 429, reset
    assert delta("reqworker_cache_total", api="fast", result="hit") == 1
    get_requests = sum(len([h for h in stack.api.hits(p)]) for p in (again, flaky, limited, reset, missing))
    assert delta("reqworker_cache_total", api="fast", result="miss") == get_requests == 9
    # The fleet's state, read from Redis at scrape time.
    assert after.total("reqworker_paused_seconds", api="fast") == 0
    assert {"reqworker_queue_length", "reqworker_parked_jobs"} <= after.names()
    assert after.total("reqworker_queue_length") == 0
    # No URL or path in any label.
    for _, labels, _ in after.samples:
        assert not any("/" in value for value in labels.values()), labels


def test_a_paused_profile_and_a_parked_job_show_in_the_gauges(served: MetricsWorker) -> None:
    stack = served.stack
    path = _path()
    stack.api.script(path, Reply(503, headers={"Retry-After": "60"}), Reply(json={}))
    report = stack.client.submit_many([{"api": "seed", "path": path}])

    def parked() -> Metrics | None:
        now = served.scrape()
        return now if now.total("reqworker_parked_jobs") == 1 else None

    now = eventually(parked, within_s=60, what="the job parked for its Retry-After")
    assert 0 < now.total("reqworker_paused_seconds", api="seed") <= 60
    assert now.total("reqworker_paused_seconds", api="fast") == 0
    # The batch counts it as retrying once the task's retry handler has run.
    eventually(lambda: report.batch.status().retrying == 1, within_s=30, what="the retrying count")


def test_json_logs_parse_line_by_line_and_hold_no_token_or_body(served: MetricsWorker) -> None:
    stack = served.stack
    path = _path()
    stack.api.script(f"/secure{path}", Reply(503), Reply(json={"secret_body": BODY_MARKER}))
    records = _run_batch(stack, [{"api": "bearer", "path": path, "key": "logged"}])
    assert records[0]["ok"] is True
    assert records[0]["body"] == {"secret_body": BODY_MARKER}
    job_id, batch_id = records[0]["job_id"], records[0]["batch_id"]

    def logged_retry() -> list[dict[str, object]] | None:
        lines = [json.loads(line) for line in served.worker.log().splitlines() if line.strip()]
        mine = [e for e in lines if e["job_id"] == job_id]
        return lines if any("countdown" in str(e["message"]) for e in mine) else None

    lines = eventually(logged_retry, within_s=30, what="the retry in the log")
    for entry in lines:
        assert {"time", "level", "logger", "message", "job_id", "batch_id", "api"} <= set(entry)
    mine = [e for e in lines if e["job_id"] == job_id]
    assert all(e["batch_id"] == batch_id and e["api"] == "bearer" for e in mine)
    assert any(e["logger"] == "reqworker.task" for e in mine)
    assert any(" ready." in str(e["message"]) for e in lines)
    text = Path(served.worker.log_path).read_text()
    assert TOKEN not in text
    assert BODY_MARKER not in text


def test_two_workers_on_one_host_each_count_their_own_share(
        redis_server: LocalRedis, tmp_path: Path) -> None:
    ports = free_port(), free_port()
    with LoopbackAPI() as api, make_stack(redis_server.url, api, tmp_path, REQWORKER_QUEUE=_queue()) as stack:
        env = dict(stack.env, REQWORKER_LOG_FORMAT="json")
        workers = [MetricsWorker(stack, WorkerProcess(dict(env, REQWORKER_METRICS_PORT=str(port)),
                                                      tmp_path / f"w{port}.log", concurrency=2,
                                                      pool=pool, hostname=f"w{port}@host").wait_ready(),
                                 port)
                   for port, pool in zip(ports, ("threads", "prefork"), strict=True)]
        try:
            _run_batch(stack, [{"api": "fast", "path": f"/echo/two/{i}"} for i in range(40)])

            def all_counted() -> list[Metrics] | None:
                scrapes = [w.scrape() for w in workers]
                done = sum(s.total("reqworker_jobs_total") for s in scrapes)
                return scrapes if done >= 40 else None

            scrapes = eventually(all_counted, within_s=60, what="both workers' counts")
            counted = [s.total("reqworker_requests_total", status="200") for s in scrapes]
            assert sum(counted) == api.answers()["200"] == 40
        finally:
            stop_all(w.worker for w in workers)
    # Every line of both logs, to the warm shutdown, is one JSON object.
    for w in workers:
        lines = w.worker.log().splitlines()
        assert [json.loads(line)["level"] for line in lines]
        assert any("Warm shutdown" in json.loads(line)["message"] for line in lines)


def test_a_second_worker_on_a_taken_metrics_port_refuses_to_start(
        redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path) -> None:
    with make_stack(redis_server.url, loopback_api, tmp_path) as stack, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(stack.env, "worker", "--metrics-port", str(port), timeout_s=60)
    assert done.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
