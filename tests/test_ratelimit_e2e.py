"""The shared rate budget, pauses and concurrency cap, across real worker processes."""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, eventually, run_cli, start_all, stop_all
from tests.support.loopback import Hit, LoopbackAPI, Reply
from tests.support.stack import Stack, new_stack
from worker.keys import Keys
from worker.ratelimit import RateLimiter

pytestmark = pytest.mark.integration

LIMIT_PER_S = 20
#: The API tolerates one request more than limit + burst in a window: a request may leave
#: up to 50 ms after its slot (``worker.admission.LATE_S``), one request's spacing here.
API_ALLOWS = LIMIT_PER_S + 1 + 1

PROFILES = """
[apis.limited]
base_url = "{url}/limited"
rate_limit = "{limit}/s"
timeout = 5
backoff = {{ start = 0.05, factor = 2, count = 3 }}

[apis.hourly]
base_url = "{url}/hourly"
rate_limit = "1/h"

[apis.capped]
base_url = "{url}/capped"
concurrency = 2

[apis.pausing]
base_url = "{url}/pausing"

[apis.adaptive]
base_url = "{url}/adaptive"
adaptive_rate = true
"""


#: What the API asks a client to wait for after its first request to a "first" path: a
#: ``Retry-After`` on /pausing/, ``RateLimit-Reset`` (nothing remaining) on /adaptive/.
QUIET_S = {"/pausing/": 3.0, "/adaptive/": 2.0}
#: Slack for the clocks of Redis (which times the pause) and of the API.
CLOCK_SLACK_S = 0.05


class FussyAPI:
    """Plays an API that enforces a rate (429 beyond it), keeps clients to what its headers
    asked for (429 for each request that came too early), and counts requests in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window: deque[float] = deque()
        self.rejected = 0
        #: The most requests the API counted in one second (its window of the rate limit).
        self.busiest_window = 0
        self.in_flight = 0
        self.most_in_flight = 0
        #: Until when (``Hit.at``) the API has asked clients of each prefix to stay away.
        self.quiet_until = dict.fromkeys(QUIET_S, 0.0)
        #: Requests that came while the API had asked to stay away, by prefix.
        self.early = dict.fromkeys(QUIET_S, 0)

    def __call__(self, hit: Hit) -> Reply | None:
        if hit.path.startswith("/limited/"):
            with self.lock:
                while self.window and self.window[0] <= hit.at - 1.0:
                    self.window.popleft()
                if len(self.window) >= API_ALLOWS:
                    self.rejected += 1
                    return Reply(429, headers={"Retry-After": "1"})
                self.window.append(hit.at)
                self.busiest_window = max(self.busiest_window, len(self.window))
            return Reply(json={"path": hit.path})
        prefix = next((p for p in QUIET_S if hit.path.startswith(p)), None)
        if prefix is not None:
            return self._quiet(prefix, hit)
        if hit.path.startswith("/capped/"):
            with self.lock:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            threading.Event().wait(0.05)
            with self.lock:
                self.in_flight -= 1
            return Reply(json={"ok": True})
        return Reply(json={"path": hit.path})

    def _quiet(self, prefix: str, hit: Hit) -> Reply:
        """429 while clients were asked to stay away; the first request to a "first" path asks."""
        quiet_s = QUIET_S[prefix]
        with self.lock:
            if hit.at < self.quiet_until[prefix]:
                self.early[prefix] += 1
                return Reply(429, headers={"Retry-After": "1"})
            first = hit.path.startswith(f"{prefix}first/") and not self.quiet_until[prefix]
            if first:
                self.quiet_until[prefix] = hit.at + quiet_s - CLOCK_SLACK_S
        if first and prefix == "/pausing/":
            return Reply(429, headers={"Retry-After": f"{quiet_s:g}"})
        if first:
            return Reply(json={}, headers={"RateLimit-Remaining": "0", "RateLimit-Reset": f"{quiet_s:g}"})
        return Reply(json={"path": hit.path})


@pytest.fixture(scope="module")
def fussy() -> FussyAPI:
    return FussyAPI()


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, fussy: FussyAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("limits")
    with LoopbackAPI(fallback=fussy) as api:
        yield new_stack(redis_server.url, api, tmp, profiles=PROFILES.replace("{limit}", str(LIMIT_PER_S)))


@pytest.fixture(scope="module")
def workers(stack: Stack) -> Iterator[list[WorkerProcess]]:
    procs = [WorkerProcess(stack.env, stack.tmp / f"w{i}.log", concurrency=8, hostname=f"w{i}@%h")
             for i in range(2)]
    yield start_all(procs)
    stop_all(procs)


def limiter(stack: Stack, redis_server: LocalRedis) -> RateLimiter:
    return RateLimiter(redis.Redis.from_url(redis_server.url), Keys(stack.env["REQWORKER_KEY_PREFIX"]))


def test_a_fleet_sends_at_the_shared_rate_and_never_gets_a_429(
        stack: Stack, workers: list[WorkerProcess], fussy: FussyAPI,
        alone: Callable[[], AbstractContextManager[None]]) -> None:
    run = uuid.uuid4().hex[:8]
    jobs = [{"api": "limited", "path": f"/item/{run}/{i}", "key": i} for i in range(300)]
    # Alone: a worker kept off the CPU by another test sends late, and late requests bunch.
    with alone():
        report = stack.client.submit_many(jobs, name="limited")
        report.batch.wait(poll_s=0.25, timeout_s=240)
    records = list(report.batch.results())
    assert len(records) == 300
    assert [r["error"] for r in records if not r["ok"]] == []
    assert fussy.rejected == 0
    # waiting for the budget spends no attempt
    assert {r["attempts"] for r in records} == {1}
    assert len([h for h in stack.api.hits() if h.path.startswith(f"/limited/item/{run}/")]) == 300
    # The API's own count: 300 jobs on 16 threads at once would put far more in one window.
    assert 0 < fussy.busiest_window <= API_ALLOWS
    # Waiting jobs reserve their slot and wait in Redis for it: no job goes through the
    # broker more than three times (it was dozens when waits raced for the next slot).
    logs = "".join(w.log() for w in workers)
    passes = [logs.count(f"reqworker.request[{r['job_id']}] received") for r in records]
    assert max(passes) <= 3
    assert sum(passes) < 2.5 * len(records)


def test_cache_hits_do_not_spend_the_budget(stack: Stack, workers: list[WorkerProcess]) -> None:
    path = f"/once/{uuid.uuid4().hex}"
    first = stack.run({"api": "hourly", "path": path})
    # the hourly budget is spent now: only a cache hit can answer within the test
    second = stack.run({"api": "hourly", "path": path})
    assert (first["from_cache"], second["from_cache"]) == (False, True)
    assert second["attempts"] == 1


def test_retry_after_pauses_the_whole_profile_for_every_worker(
        stack: Stack, workers: list[WorkerProcess], redis_server: LocalRedis, fussy: FussyAPI) -> None:
    first = f"/pausing/first/{uuid.uuid4().hex}"
    batch, _ = stack.client.submit({"api": "pausing", "path": first[len("/pausing"):]})
    # The API answered 429 with Retry-After: 3, and the profile is paused: the others come now.
    eventually(lambda: limiter(stack, redis_server).paused_for("pausing") > 0, what="the pause")
    run = uuid.uuid4().hex[:8]
    others = stack.client.submit_many(
        [{"api": "pausing", "path": f"/other/{run}/{i}"} for i in range(12)])
    others.batch.wait(poll_s=0.2, timeout_s=120)
    batch.wait(poll_s=0.2, timeout_s=120)
    later = [h.at for h in stack.api.hits() if h.path.startswith(f"/pausing/other/{run}/")]
    assert len(later) == 12
    # Sent while the pause held, any of them would have been early: a 429 and a second attempt.
    assert fussy.early["/pausing/"] == 0
    assert all(r["ok"] and r["attempts"] == 1 for r in others.batch.results())
    assert next(batch.results())["attempts"] == 2


def test_a_pause_longer_than_timeout_fails_the_jobs_that_would_wait(
        stack: Stack, workers: list[WorkerProcess], redis_server: LocalRedis) -> None:
    limiter(stack, redis_server).pause("adaptive", 10_000)
    try:
        record = stack.run({"api": "adaptive", "path": f"/x/{uuid.uuid4().hex}"})
    finally:
        redis.Redis.from_url(redis_server.url).delete(
            Keys(stack.env["REQWORKER_KEY_PREFIX"]).pause("adaptive"))
    assert record["ok"] is False
    assert record["attempts"] == 0
    assert record["error"]["type"] == "RateLimitError"
    assert "paused" in record["error"]["message"]


def test_adaptive_mode_slows_down_before_the_api_says_429(
        stack: Stack, workers: list[WorkerProcess], fussy: FussyAPI) -> None:
    # The first answer says: nothing remains of the budget until 2 s from now.
    first = f"/adaptive/first/{uuid.uuid4().hex}"
    assert stack.run({"api": "adaptive", "path": first[len("/adaptive"):]})["ok"]
    assert fussy.quiet_until["/adaptive/"] > 0
    second = f"/adaptive/second/{uuid.uuid4().hex}"
    record = stack.run({"api": "adaptive", "path": second[len("/adaptive"):]})
    # Sent at once, the second job would have been early: a 429 and a second attempt.
    assert fussy.early["/adaptive/"] == 0
    assert record["ok"]
    assert record["attempts"] == 1


def test_the_concurrency_cap_holds_across_the_fleet(
        stack: Stack, workers: list[WorkerProcess], fussy: FussyAPI) -> None:
    run = uuid.uuid4().hex[:8]
    report = stack.client.submit_many(
        [{"api": "capped", "path": f"/{run}/{i}", "cache": False} for i in range(24)])
    report.batch.wait(poll_s=0.2, timeout_s=120)
    assert all(r["ok"] and r["attempts"] == 1 for r in report.batch.results())
    assert fussy.most_in_flight == 2


def test_limits_shows_each_profiles_budget_and_pauses(
        stack: Stack, workers: list[WorkerProcess], redis_server: LocalRedis) -> None:
    limiter(stack, redis_server).pause("pausing", 60)
    try:
        shown = run_cli(stack.env, "limits")
        as_json = run_cli(stack.env, "limits", "--json")
    finally:
        redis.Redis.from_url(redis_server.url).delete(
            Keys(stack.env["REQWORKER_KEY_PREFIX"]).pause("pausing"))
    assert shown.returncode == 0, shown.stderr
    assert "limited: 20/s (burst 1)" in shown.stdout
    assert "capped: no rate limit, 0/2 in flight" in shown.stdout
    assert "pausing: no rate limit, PAUSED for" in shown.stdout
    states = {s["profile"]: s for s in map(json.loads, as_json.stdout.splitlines())}
    assert states["pausing"]["paused_s"] > 50
    assert states["hourly"]["rate"] == "1/h"

