"""Bulk syncs: tens of thousands of jobs, pages, duplicates, and following a batch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, run_cli, start_all, stop_all
from tests.support.loopback import Hit, LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.integration


def collection(hit: Hit) -> Reply | None:
    """A collection of 37 items served 5 to a page, by offset, with a JSON `next` link."""
    if not hit.path.startswith("/items/"):
        return None
    query = dict(part.split("=") for part in hit.query.split("&") if part)
    offset, limit = int(query.get("offset", 0)), int(query.get("limit", 5))
    items = list(range(offset, min(offset + limit, 37)))
    more = offset + limit < 37
    nxt = f"{hit.path}?offset={offset + limit}&limit={limit}" if more else None
    headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
    return Reply(json={"items": items, "next": nxt}, headers=headers)


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with LoopbackAPI(fallback=collection) as api, \
            make_stack(redis_server.url, api, tmp_path_factory.mktemp("bulk")) as s:
        yield s


@pytest.fixture(scope="module")
def workers(stack: Stack) -> Iterator[list[WorkerProcess]]:
    procs = [WorkerProcess(stack.env, stack.tmp / f"bulk{i}.log", concurrency=8,
                           hostname=f"bulk{i}@%h") for i in range(2)]
    try:
        yield start_all(procs)
    finally:
        stop_all(procs)


def test_4000_jobs_each_key_has_exactly_one_result(stack: Stack, workers: list[WorkerProcess],
                                                    tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    jobs_file = tmp_path / "sync.jsonl"
    with jobs_file.open("w") as out:
        for i in range(4_000):
            out.write(json.dumps({"api": "fast", "path": f"/echo/{run}/{i}", "key": f"k{i}",
                                  "cache": False}) + "\n")
    done = run_cli(stack.env, "enqueue", str(jobs_file), "--name", "big", "--wait", timeout_s=900)
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    results = tmp_path / "results.jsonl"
    assert run_cli(stack.env, "results", batch_id, "-o", str(results)).returncode == 0
    keys = [json.loads(line)["key"] for line in results.read_text().splitlines()]
    assert len(keys) == 4_000
    assert set(keys) == {f"k{i}" for i in range(4_000)}
    status = json.loads(run_cli(stack.env, "status", batch_id, "--json").stdout)
    assert (status["succeeded"], status["failed"], status["pending"]) == (4_000, 0, 0)


@pytest.mark.parametrize("follow", [{"next": "$.next"}, {"next": "link"}])
def test_a_paginated_collection_yields_one_result_per_page_in_one_batch(
        stack: Stack, workers: list[WorkerProcess], follow: dict[str, str]) -> None:
    path = f"/items/{uuid.uuid4().hex}"
    batch, _ = stack.client.submit({"api": "fast", "path": path, "params": {"limit": 5},
                                    "paginate": follow, "key": "all"})
    counts = batch.wait(poll_s=0.1, timeout_s=120)
    records = list(batch.results())
    assert counts.succeeded == counts.total == 8
    assert sorted(r["page"] for r in records) == list(range(1, 9))
    items = [i for r in sorted(records, key=lambda r: r["page"]) for i in r["body"]["items"]]
    assert items == list(range(37))
    assert {r["key"] for r in records} == {"all"}
    assert {r["batch_id"] for r in records} == {batch.id}


def test_max_pages_stops_following(stack: Stack, workers: list[WorkerProcess]) -> None:
    path = f"/items/{uuid.uuid4().hex}"
    batch, _ = stack.client.submit({"api": "fast", "path": path,
                                    "paginate": {"next": "$.next", "max_pages": 3}})
    assert batch.wait(poll_s=0.1, timeout_s=120).succeeded == 3


def test_duplicate_gets_in_one_batch_reach_the_api_once(
        stack: Stack, workers: list[WorkerProcess]) -> None:
    path = f"/echo/dup/{uuid.uuid4().hex}"
    jobs = [{"api": "fast", "path": path, "params": {"q": 1}, "key": f"copy{i}"} for i in range(3)]
    jobs.append({"api": "fast", "path": path, "params": {"q": 2}, "key": "other"})
    report = stack.client.submit_many(jobs)
    counts = report.batch.wait(poll_s=0.1, timeout_s=120)
    assert (counts.total, counts.duplicates, counts.succeeded) == (2, 2, 2)
    records = list(report.batch.results())
    assert sorted(r["key"] for r in records) == ["copy0", "copy1", "copy2", "other"]
    assert len({r["job_id"] for r in records if r["key"].startswith("copy")}) == 1
    assert len(stack.api.hits(path)) == 2


def test_watch_prints_plain_progress_lines_when_piped(
        stack: Stack, workers: list[WorkerProcess]) -> None:
    path = f"/gone/{uuid.uuid4().hex}"
    stack.api.script(path, Reply(404, json={"error": {"message": "gone"}}))
    report = stack.client.submit_many(
        [{"api": "fast", "path": f"/echo/w/{uuid.uuid4().hex}/{i}"} for i in range(30)]
        + [{"api": "fast", "path": path}])
    watched = run_cli(stack.env, "watch", report.batch.id)
    assert watched.returncode == 1
    assert "\r" not in watched.stderr
    assert "\033" not in watched.stderr
    *progress, summary = watched.stderr.strip().splitlines()
    assert progress[-1].startswith("31/31 done, ")
    assert "failed 1" in progress[-1]
    assert "jobs finished while watching" in summary
    assert "succeeded  30" in watched.stdout
    assert "failed     1" in watched.stdout


def test_retry_failed_enqueues_only_the_failed_jobs_as_a_new_batch(
        stack: Stack, workers: list[WorkerProcess]) -> None:
    flaky = f"/flaky/{uuid.uuid4().hex}"
    stack.api.script(flaky, Reply(400, json={"error": {"message": "not yet"}}), Reply(json={}))
    report = stack.client.submit_many([{"api": "fast", "path": flaky, "key": "f"},
                                       {"api": "fast", "path": f"/echo/{uuid.uuid4().hex}"}])
    assert report.batch.wait(poll_s=0.1, timeout_s=60).failed == 1
    again = run_cli(stack.env, "retry-failed", report.batch.id, "--wait")
    assert again.returncode == 0, again.stderr
    new = stack.client.batch(again.stdout.strip())
    assert [r["key"] for r in new.results()] == ["f"]
    assert new.facts["name"] == f"retry of {report.batch.id}"

