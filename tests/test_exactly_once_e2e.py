"""A worker killed outright loses no count and sends no POST twice; a string job fails clearly.

On both brokers. The crash is placed, not timed: the worker kills itself right after
storing a job's result and before counting it (``REQWORKER_TEST_CRASH_AT``), while
the test API holds the other requests in flight until the worker is dead.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, eventually
from tests.support.loopback import Hit, LoopbackAPI, Reply
from tests.support.stack import Stack, new_stack
from worker.jobs import TASK_NAME

pytestmark = pytest.mark.integration

#: The shortest visibility timeout the worker's start-up check allows for the profile
#: below (one 5 s attempt and 10 s of margin): on Redis, a killed worker's jobs come
#: back after it.
VISIBILITY_TIMEOUT_S = "15"

PROFILE = """
[apis.held]
base_url = "{url}"
timeout = 5
backoff = {{ start = 0.05, factor = 2, count = 2 }}
"""


class HoldingAPI:
    """An API that holds the first request to each /hold/ path until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.api = LoopbackAPI(fallback=self._answer)

    def _answer(self, hit: Hit) -> Reply | None:
        if not hit.path.startswith("/hold/"):
            return None
        with self._lock:
            first = hit.path not in self._seen
            self._seen.add(hit.path)
        if first:
            self.release.wait(timeout=120)
        return Reply(json={"method": hit.method, "path": hit.path})


@pytest.fixture(scope="module")
def holding() -> Iterator[HoldingAPI]:
    api = HoldingAPI()
    with api.api:
        yield api
        api.release.set()


@pytest.fixture
def stack(redis_server: LocalRedis, holding: HoldingAPI, broker: dict[str, str],
          tmp_path: Path) -> Stack:
    return new_stack(redis_server.url, holding.api, tmp_path, profiles=PROFILE,
                     REQWORKER_VISIBILITY_TIMEOUT=VISIBILITY_TIMEOUT_S, **broker)


def test_a_worker_killed_after_storing_a_result_or_mid_post_loses_no_count_and_resends_no_post(
        stack: Stack, holding: HoldingAPI) -> None:
    """One kill -9 at a placed point: after a result was stored and before it was counted,
    while POSTs, a PATCH, a retry_unsafe POST and a GET are in flight.

    The batch of the stored-but-uncounted job still finishes (its redelivery counts it);
    no POST or PATCH reaches the API twice, and those cut off end as OutcomeUnknown;
    the GET and the retry_unsafe POST are sent again and succeed.
    """
    holding.release.clear()
    run = uuid.uuid4().hex[:8]
    unsafe = {f"/hold/{run}/post{i}": "POST" for i in range(3)} | {f"/hold/{run}/patch": "PATCH"}
    resent = {f"/hold/{run}/get": {}, f"/hold/{run}/again": {"method": "POST",
                                                             "retry_unsafe": True}}
    jobs: list[dict[str, object]]
    jobs = [{"api": "held", "method": method, "path": path, "json": {"n": 1}, "key": path}
            for path, method in unsafe.items()]
    jobs += [{"api": "held", "path": path, "key": path, **extra} for path, extra in resent.items()]
    held = list(unsafe) + list(resent)
    doomed = WorkerProcess(dict(stack.env, REQWORKER_TEST_CRASH_AT="after-store"),
                           stack.tmp / "doomed.log", concurrency=len(held) + 1).wait_ready()
    try:
        in_flight = stack.client.submit_many(jobs, name="in flight").batch
        eventually(lambda: all(stack.api.hits(p) for p in held), what="every request in flight")
        stored, job_id = stack.client.submit({"api": "held", "path": f"/echo/{run}"})
        eventually(lambda: doomed.proc.poll() is not None, what="the worker killing itself")
    finally:
        doomed.kill()
        holding.release.set()
    assert f"crash point after-store reached by job {job_id}" in doomed.log()
    assert stored.status().pending == 1  # stored, never counted

    survivor = stack.worker("survivor", concurrency=4)
    try:
        # Not Batch.wait, which would settle the count itself: the redelivery must do it.
        eventually(lambda: stored.status().finished, within_s=240, every_s=0.5,
                   what="the uncounted job's batch finishing")
        counts = in_flight.wait(poll_s=0.2, timeout_s=240)
    finally:
        survivor.stop()
    assert f"job {job_id} already finished" in survivor.log()
    assert stored.status().succeeded == 1
    assert len(stack.api.hits(f"/echo/{run}")) == 1

    records = {r["key"]: r for r in in_flight.results()}
    assert counts.total == len(held)
    assert counts.failed == len(unsafe)
    for path in unsafe:
        assert len(stack.api.hits(path)) == 1, path
        error = records[path]["error"]
        assert error["type"] == "OutcomeUnknown"
        assert "not resent without retry_unsafe" in error["message"]
    for path in resent:
        assert len(stack.api.hits(path)) == 2, path
        assert records[path]["ok"] is True


def test_a_job_given_as_a_string_fails_clearly_and_the_worker_goes_on(
        stack: Stack, holding: HoldingAPI) -> None:
    holding.release.set()
    worker = stack.worker("strings", concurrency=2)
    try:
        app = stack.client.app
        job_id = str(uuid.uuid4())
        app.send_task(TASK_NAME, kwargs={"job": "GET /tracks/1"}, task_id=job_id)
        eventually(lambda: app.backend.get_task_meta(job_id)["status"] == "FAILURE",
                   what="the string job failing")
        after = stack.run({"api": "held", "path": f"/echo/{uuid.uuid4().hex}"})
    finally:
        worker.stop()
    # The JobFailed the task raised carries the result record, as stored.
    record = json.loads(stack.client.store.metas([job_id])[0] or b"{}")["result"]["exc_message"][0]
    assert record["ok"] is False
    assert record["error"]["type"] == "JobError"
    assert "a job is a JSON object, not str" in record["error"]["message"]
    assert after["ok"] is True
    assert "ValueError" not in worker.log()
