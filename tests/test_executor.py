"""Every branch of the executor with small stubs: no Redis, no network, milliseconds each.

The HTTP side is a requests adapter that answers from a script; the gate, sessions and
authoriser are stubs that record what they were asked.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from requests_cache import CachedSession
from urllib3 import HTTPResponse

from worker.admission import Pass, Refused, Wait
from worker.auth import Credentials
from worker.backoff import LONGEST_WAIT_S, Backoff
from worker.bounds import admit_now
from worker.errors import AuthError
from worker.executor import Done, Executor, Failed, JobContext, RunAgain, Spent
from worker.inflight import OUTCOME_UNKNOWN
from worker.jobs import Job
from worker.profiles import Profile

BASE = "http://api.test/v1"
PROFILE = Profile(name="api", base_url=BASE, backoff=Backoff(0.5, 2.0, 2), timeout_s=5)
CTX = JobContext(job_id="job-1", batch_id="batch-1")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    #: Raise this instead of answering.
    error: Exception | None = None


class ScriptedAdapter(HTTPAdapter):
    """Answers each request with the next reply of its script (the last one repeats)."""

    def __init__(self, *replies: Reply) -> None:
        super().__init__()
        self.replies = list(replies)
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        admit_now()  # as worker.bounds.BoundedAdapter does, before anything goes out
        self.sent.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.error is not None:
            raise reply.error
        response = requests.Response()
        response.status_code = reply.status
        response._content = reply.body
        response.headers.update({"Content-Type": "application/json", **reply.headers})
        # A raw answer as urllib3 gives it: requests-cache stores it.
        response.raw = HTTPResponse(body=io.BytesIO(reply.body), headers=dict(response.headers),
                                    status=reply.status, preload_content=False, request_url=request.url)
        response.url = request.url or ""
        response.request = request
        response.reason = {200: "OK", 404: "Not Found", 401: "Unauthorized",
                           503: "Service Unavailable"}.get(reply.status, "")
        return response


class StubSessions:
    def __init__(self, adapter: ScriptedAdapter) -> None:
        self.session = requests.Session()
        self.session.mount("http://", adapter)

    def for_job(self, job: Job) -> requests.Session:
        return self.session


@dataclass
class StubAuthoriser:
    token: str = "t1"
    renewals: int = 0
    can_renew: bool = True
    #: Raise this instead of giving credentials.
    error: AuthError | None = None

    def credentials(self) -> Credentials:
        if self.error is not None:
            raise self.error
        return Credentials({"Authorization": f"Bearer {self.token}"}, self.token)

    def renew(self, rejected: Credentials) -> bool:
        self.renewals += 1
        if self.can_renew:
            self.token = f"t{self.renewals + 1}"
        return self.can_renew


@dataclass
class StubGate:
    tickets: list[Pass | Wait | Refused] = field(default_factory=lambda: [Pass()])
    asked: list[dict[str, Any]] = field(default_factory=list)
    paused: list[float | None] = field(default_factory=list)
    #: Whether the profile has a rate budget (a cache hit must then not spend it).
    budgeted: bool = False
    left: list[Pass] = field(default_factory=list)

    def budgets(self, profile: Profile) -> bool:
        return self.budgeted

    def enter(self, profile: Profile, *, slot_at: float | None = None,
              waits: int = 0) -> Pass | Wait | Refused:
        self.asked.append({"slot_at": slot_at, "waits": waits})
        return self.tickets.pop(0) if len(self.tickets) > 1 else self.tickets[0]

    def leave(self, profile: Profile, ticket: Pass) -> None:
        self.left.append(ticket)

    def after(self, profile: Profile, headers: Mapping[str, str], retry_after_s: float | None) -> None:
        self.paused.append(retry_after_s)


@dataclass
class StubInFlight:
    """The in-flight marks of unsafe jobs: ``begin`` refuses a job already marked."""

    marked: set[str] = field(default_factory=set)
    ended: list[str] = field(default_factory=list)

    def begin(self, job_id: str) -> bool:
        if job_id in self.marked:
            return False
        self.marked.add(job_id)
        return True

    def end(self, job_id: str) -> None:
        self.ended.append(job_id)
        self.marked.discard(job_id)


def executor(adapter: ScriptedAdapter, gate: StubGate | None = None,
             auth: StubAuthoriser | None = None, *, profile: Profile = PROFILE,
             inflight: StubInFlight | None = None, sessions: StubSessions | None = None) -> Executor:
    return Executor({"api": profile}, sessions or StubSessions(adapter),  # type: ignore[arg-type]
                    {"api": auth or StubAuthoriser()}, gate or StubGate(),  # type: ignore[arg-type]
                    inflight)  # type: ignore[arg-type]


def job(**fields: Any) -> dict[str, Any]:
    return {"api": "api", "path": "/items/1", "cache": False, "key": "k", **fields}


def test_a_2xx_is_done_with_the_parsed_body_and_one_attempt() -> None:
    outcome = executor(ScriptedAdapter(Reply())).run(job(), Spent(), CTX)
    assert isinstance(outcome, Done)
    assert outcome.record["ok"] is True
    assert outcome.record["body"] == {"ok": True}
    assert outcome.record["attempts"] == 1
    assert outcome.record["key"] == "k"


def test_the_profiles_credentials_are_sent() -> None:
    adapter = ScriptedAdapter(Reply())
    executor(adapter).run(job(), Spent(), CTX)
    assert adapter.sent[0].headers["Authorization"] == "Bearer t1"


def test_a_5xx_is_retried_with_the_seeds_backoff_then_given_up() -> None:
    run = executor(ScriptedAdapter(Reply(503))).run
    first = run(job(), Spent(), CTX)
    assert isinstance(first, RunAgain)
    assert first.backoff
    assert first.countdown_s == 0.5
    second = run(job(), first.spent, CTX)
    assert isinstance(second, RunAgain)
    assert second.countdown_s == 1.0
    last = run(job(), second.spent, CTX)
    assert isinstance(last, Failed)
    assert "max retries exceeded" in last.record["error"]["message"]
    assert last.record["attempts"] == 3


def test_a_retry_after_is_the_countdown_and_pauses_the_profile() -> None:
    gate = StubGate()
    outcome = executor(ScriptedAdapter(Reply(429, headers={"Retry-After": "2"})), gate).run(
        job(), Spent(), CTX)
    assert isinstance(outcome, RunAgain)
    assert outcome.countdown_s == 2.0
    assert gate.paused == [2.0]


def test_a_404_fails_at_once_with_the_apis_message() -> None:
    body = b'{"error": {"message": "no such item"}}'
    outcome = executor(ScriptedAdapter(Reply(404, body))).run(job(), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"] == {"type": "APIError", "status_code": 404, "message": "no such item"}


def test_a_401_renews_the_token_once_and_retries_at_once_without_spending_a_retry() -> None:
    auth = StubAuthoriser()
    run = executor(ScriptedAdapter(Reply(401)), auth=auth).run
    first = run(job(), Spent(), CTX)
    assert isinstance(first, RunAgain)
    assert first.countdown_s == 0.0
    assert not first.backoff
    assert first.spent.reauths == 1
    assert first.spent.retries == 0
    assert auth.renewals == 1
    second = run(job(), first.spent, CTX)
    assert isinstance(second, Failed)
    assert "even after they were renewed" in second.record["error"]["message"]


def test_a_401_with_credentials_that_cannot_be_renewed_fails() -> None:
    outcome = executor(ScriptedAdapter(Reply(401)), auth=StubAuthoriser(can_renew=False)).run(
        job(), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert "cannot be renewed" in outcome.record["error"]["message"]


def test_a_wait_at_the_gate_spends_no_attempt_and_keeps_the_reserved_slot() -> None:
    gate = StubGate([Wait(3.0, "waits for its slot", slot_at=1234.5)])
    adapter = ScriptedAdapter(Reply())
    outcome = executor(adapter, gate).run(job(), Spent(), CTX)
    assert isinstance(outcome, RunAgain)
    assert not outcome.backoff
    assert outcome.countdown_s == 3.0
    assert outcome.spent.attempts == 0
    assert outcome.spent.waits == 1
    assert outcome.spent.slot_at_ms == 1_234_500
    assert adapter.sent == []
    again = executor(ScriptedAdapter(Reply()), gate := StubGate()).run(job(), outcome.spent, CTX)
    assert isinstance(again, Done)
    assert gate.asked == [{"slot_at": 1234.5, "waits": 1}]


def test_a_wait_longer_than_the_job_may_wait_fails_it() -> None:
    gate = StubGate([Refused("paused for too long")])
    outcome = executor(ScriptedAdapter(Reply()), gate).run(job(), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["type"] == "RateLimitError"


def test_a_post_is_not_resent_after_a_failure_that_may_have_reached_the_api() -> None:
    dropped = Reply(error=requests.exceptions.ReadTimeout("read timed out"))
    outcome = executor(ScriptedAdapter(dropped)).run(job(method="POST", json={"a": 1}), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["message"].endswith(
        "(not retried: the request may have reached the API; see retry_unsafe)")


def test_a_post_that_never_left_is_retried() -> None:
    refused = Reply(error=requests.exceptions.ConnectTimeout("connect timed out"))
    outcome = executor(ScriptedAdapter(refused)).run(job(method="POST", json={"a": 1}), Spent(), CTX)
    assert isinstance(outcome, RunAgain)
    assert outcome.backoff


@pytest.mark.parametrize("message", [{"api": "nope", "path": "/x"}, {"api": "api"}, {"path": "/x"}])
def test_a_message_that_is_no_valid_job_fails_with_a_job_error(message: dict[str, Any]) -> None:
    outcome = executor(ScriptedAdapter(Reply())).run(message, Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["type"] == "JobError"


def test_the_token_never_reaches_a_failures_message() -> None:
    auth = StubAuthoriser(token="sekrit-token-123")
    leak = Reply(404, b'{"error": {"message": "bad token Bearer sekrit-token-123"}}')
    outcome = executor(ScriptedAdapter(leak), auth=auth).run(job(), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["message"] == "bad token [REDACTED]"


#: A result record's fields, in the order PRODUCT.md lists them (``page`` only when paginated).
RECORD_FIELDS = ["key", "job_id", "batch_id", "api", "method", "url", "ok", "status_code", "body",
                 "from_cache", "attempts", "elapsed_ms", "error"]


def test_the_worker_and_the_producer_write_records_alike() -> None:
    from producer.records import record_of

    done = executor(ScriptedAdapter(Reply())).run(job(), Spent(), CTX)
    failed = executor(ScriptedAdapter(Reply(404))).run(job(), Spent(), CTX)
    assert isinstance(done, Done)
    assert isinstance(failed, Failed)
    assert list(done.record) == RECORD_FIELDS[:-1]
    assert list(failed.record) == RECORD_FIELDS
    lost = {"status": "FAILURE", "result": {"exc_type": "WorkerLostError", "exc_message": ["gone"]}}
    entry = {"id": "job-2", "job": {"api": "api", "method": "GET", "url": f"{BASE}/x", "key": "k2"}}
    assert record_of(entry, "batch-1", lost) == {
        "key": "k2", "job_id": "job-2", "batch_id": "batch-1", "api": "api", "method": "GET",
        "url": f"{BASE}/x", "ok": False, "status_code": None, "body": None, "from_cache": False,
        "attempts": None, "elapsed_ms": None,
        "error": {"type": "WorkerLostError", "status_code": None, "message": "gone"},
    }
    assert list(record_of(entry, "batch-1", lost) or {}) == RECORD_FIELDS
    assert list(failed.record["error"]) == ["type", "status_code", "message"]


class CachedSessions(StubSessions):
    """A real requests-cache session in memory in front of the scripted adapter."""

    def __init__(self, adapter: ScriptedAdapter) -> None:
        self.session = CachedSession(backend="memory", allowable_methods=("GET",))
        self.session.mount("http://", adapter)


def test_a_cache_hit_is_done_without_spending_the_rate_budget_or_calling_the_api() -> None:
    adapter = ScriptedAdapter(Reply(body=b'{"n": 1}'))
    gate = StubGate(budgeted=True)
    run = executor(adapter, gate, sessions=CachedSessions(adapter)).run
    first = run(job(cache=True), Spent(), CTX)
    assert isinstance(first, Done)
    assert first.record["from_cache"] is False
    assert len(gate.asked) == 1  # a miss goes through the gate
    second = run(job(cache=True), Spent(), CTX)
    assert isinstance(second, Done)
    assert second.record["from_cache"] is True
    assert second.record["body"] == {"n": 1}
    assert second.record["attempts"] == 1
    assert len(gate.asked) == 1  # the hit never asked the gate
    assert len(adapter.sent) == 1


def test_without_a_budget_a_miss_checks_the_pause_before_it_goes_out_and_a_hit_never() -> None:
    adapter = ScriptedAdapter(Reply(body=b'{"n": 1}'))
    gate = StubGate([Pass(), Wait(4.0, "profile 'api' is paused (Retry-After): 4.0 s", kind="pause")])
    run = executor(adapter, gate, sessions=CachedSessions(adapter)).run
    assert isinstance(run(job(cache=True), Spent(), CTX), Done)
    assert len(gate.asked) == 1
    # Paused now: the same GET is a cache hit, and asks nothing.
    hit = run(job(cache=True), Spent(), CTX)
    assert isinstance(hit, Done)
    assert hit.record["from_cache"] is True
    assert len(gate.asked) == 1
    # Another GET would go out: the pause holds it back before anything is sent.
    held = run(job(cache=True, path="/items/2"), Spent(), CTX)
    assert isinstance(held, RunAgain)
    assert (held.countdown_s, held.backoff, held.spent.attempts, held.spent.waits) == (4.0, False, 0, 1)
    assert len(gate.asked) == 2
    assert len(adapter.sent) == 1


def test_without_a_budget_a_pause_too_long_fails_a_miss_before_it_goes_out() -> None:
    adapter = ScriptedAdapter(Reply())
    gate = StubGate([Refused("profile 'api' is paused for 600.0 s")])
    outcome = executor(adapter, gate, sessions=CachedSessions(adapter)).run(job(cache=True), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["type"] == "RateLimitError"
    assert adapter.sent == []


def test_a_refresh_skips_the_cache_and_goes_through_the_gate() -> None:
    adapter = ScriptedAdapter(Reply())
    gate = StubGate(budgeted=True)
    run = executor(adapter, gate, sessions=CachedSessions(adapter)).run
    run(job(cache=True), Spent(), CTX)
    again = run(job(cache=True, refresh=True), Spent(), CTX)
    assert isinstance(again, Done)
    assert again.record["from_cache"] is False
    assert len(gate.asked) == 2
    assert len(adapter.sent) == 2


def test_every_ticket_the_gate_gave_is_handed_back() -> None:
    ticket = Pass()
    gate = StubGate([ticket])
    executor(ScriptedAdapter(Reply(error=requests.exceptions.ReadTimeout("slow"))), gate).run(
        job(), Spent(), CTX)
    assert gate.left == [ticket]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_an_unsafe_request_that_got_a_5xx_fails_without_retry_unsafe(method: str) -> None:
    adapter = ScriptedAdapter(Reply(500))
    outcome = executor(adapter).run(job(method=method, json={"a": 1}), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["status_code"] == 500
    assert len(adapter.sent) == 1


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_an_unsafe_request_with_retry_unsafe_is_retried_after_a_5xx(method: str) -> None:
    outcome = executor(ScriptedAdapter(Reply(500))).run(
        job(method=method, json={"a": 1}, retry_unsafe=True), Spent(), CTX)
    assert isinstance(outcome, RunAgain)
    assert outcome.backoff


def test_an_unsafe_request_is_retried_after_a_503_the_api_did_not_process() -> None:
    outcome = executor(ScriptedAdapter(Reply(503))).run(job(method="PATCH", json={}), Spent(), CTX)
    assert isinstance(outcome, RunAgain)


def test_an_unsafe_job_marked_in_flight_by_an_earlier_run_fails_as_outcome_unknown() -> None:
    marks = StubInFlight(marked={CTX.job_id})
    adapter = ScriptedAdapter(Reply())
    outcome = executor(adapter, inflight=marks).run(job(method="POST", json={}), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["type"] == OUTCOME_UNKNOWN
    assert adapter.sent == []


def test_an_unsafe_job_keeps_its_mark_when_done_and_drops_it_for_a_retry() -> None:
    done_marks, retry_marks = StubInFlight(), StubInFlight()
    done = executor(ScriptedAdapter(Reply()), inflight=done_marks).run(
        job(method="POST", json={}), Spent(), CTX)
    assert isinstance(done, Done)
    assert done_marks.marked == {CTX.job_id}
    assert done_marks.ended == []
    refused = Reply(error=requests.exceptions.ConnectTimeout("connect timed out"))
    retry = executor(ScriptedAdapter(refused), inflight=retry_marks).run(
        job(method="POST", json={}), Spent(), CTX)
    assert isinstance(retry, RunAgain)
    assert retry_marks.ended == [CTX.job_id]


def test_a_safe_job_is_never_marked_in_flight() -> None:
    marks = StubInFlight(marked={CTX.job_id})
    assert isinstance(executor(ScriptedAdapter(Reply()), inflight=marks).run(job(), Spent(), CTX), Done)
    assert marks.ended == []


def test_credentials_that_may_come_later_are_retried_with_backoff_then_given_up() -> None:
    auth = StubAuthoriser(error=AuthError("token endpoint down", retryable=True))
    adapter = ScriptedAdapter(Reply())
    run = executor(adapter, auth=auth).run
    first = run(job(), Spent(), CTX)
    assert isinstance(first, RunAgain)
    assert first.backoff
    assert "credentials: token endpoint down" in first.reason
    last = run(job(), Spent(retries=PROFILE.backoff.count), CTX)
    assert isinstance(last, Failed)
    assert last.record["error"]["type"] == "AuthError"
    assert last.record["error"]["status_code"] is None
    assert adapter.sent == []


def test_credentials_that_cannot_be_had_fail_at_once() -> None:
    auth = StubAuthoriser(error=AuthError("invalid_client", retryable=False))
    outcome = executor(ScriptedAdapter(Reply()), auth=auth).run(job(), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"] == {"type": "AuthError", "status_code": None, "message": "invalid_client"}


def test_a_401_from_a_host_outside_base_url_does_not_renew_the_credentials() -> None:
    auth = StubAuthoriser()
    moved = Reply(302, b"", headers={"Location": "http://elsewhere.test/login"})
    adapter = ScriptedAdapter(moved, Reply(401))
    profile = replace(PROFILE, follow_redirects="any")
    outcome = executor(adapter, auth=auth, profile=profile).run(job(), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert "outside base_url" in outcome.record["error"]["message"]
    assert auth.renewals == 0


def test_a_retry_after_longer_than_the_profile_allows_gives_up_at_once() -> None:
    outcome = executor(ScriptedAdapter(Reply(429, headers={"Retry-After": "99999"}))).run(
        job(), Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["type"] == "APIError"
    assert outcome.record["error"]["status_code"] == 429
    assert "longer than this profile's limit" in outcome.record["error"]["message"]


def test_a_network_error_on_a_get_is_given_up_with_its_own_type() -> None:
    dropped = Reply(error=requests.exceptions.ConnectionError("reset"))
    outcome = executor(ScriptedAdapter(dropped)).run(
        job(), Spent(attempts=2, retries=PROFILE.backoff.count), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["type"] == "ConnectionError"
    assert outcome.record["attempts"] == 3


def test_a_gate_wait_is_bounded_to_the_longest_wait_and_its_reason_holds_no_secret() -> None:
    gate = StubGate([Wait(float("inf"), "waits behind Bearer t1")])
    outcome = executor(ScriptedAdapter(Reply()), gate).run(job(), Spent(), CTX)
    assert isinstance(outcome, RunAgain)
    assert outcome.countdown_s == LONGEST_WAIT_S
    assert "t1" not in outcome.reason


def test_an_adaptive_profile_tells_the_gate_of_every_answer() -> None:
    gate = StubGate()
    executor(ScriptedAdapter(Reply()), gate, profile=replace(PROFILE, adaptive_rate=True)).run(
        job(), Spent(), CTX)
    assert gate.paused == [None]
    plain = StubGate()
    executor(ScriptedAdapter(Reply()), plain).run(job(), Spent(), CTX)
    assert plain.paused == []


def test_a_paginated_job_is_done_with_its_next_page() -> None:
    page = b'{"items": [1], "next": "http://api.test/v1/items?page=2"}'
    outcome = executor(ScriptedAdapter(Reply(body=page))).run(
        job(path="/items", paginate={"next": "$.next"}), Spent(), CTX)
    assert isinstance(outcome, Done)
    assert outcome.record["page"] == 1
    assert outcome.next_job is not None
    assert outcome.next_job.url == "http://api.test/v1/items?page=2"


@pytest.mark.parametrize("message", ["not a job", ["api"], None])
def test_a_message_that_is_not_even_an_object_fails_with_a_job_error(message: Any) -> None:
    outcome = executor(ScriptedAdapter(Reply())).run(message, Spent(), CTX)
    assert isinstance(outcome, Failed)
    assert outcome.record["error"]["type"] == "JobError"


def test_a_retry_that_could_not_be_scheduled_is_a_failed_record() -> None:
    record = executor(ScriptedAdapter(Reply())).unschedulable(job(), Spent(attempts=1), CTX, "broker down")
    assert record["ok"] is False
    assert record["attempts"] == 1
    assert record["error"] == {"type": "RetryError", "status_code": None, "message": "broker down"}
