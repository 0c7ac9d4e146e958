"""Every branch of the executor with small stubs: no Redis, no network, milliseconds each.

The HTTP side is a requests adapter that answers from a script; the gate, sessions and
authoriser are stubs that record what they were asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from worker.admission import Pass, Refused, Wait
from worker.auth import Credentials
from worker.backoff import Backoff
from worker.executor import Done, Executor, Failed, JobContext, RunAgain, Spent
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
        self.sent.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.error is not None:
            raise reply.error
        response = requests.Response()
        response.status_code = reply.status
        response._content = reply.body
        response.headers.update({"Content-Type": "application/json", **reply.headers})
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

    def credentials(self) -> Credentials:
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

    def budgets(self, profile: Profile) -> bool:
        return False

    def enter(self, profile: Profile, *, slot_at: float | None = None,
              waits: int = 0) -> Pass | Wait | Refused:
        self.asked.append({"slot_at": slot_at, "waits": waits})
        return self.tickets.pop(0) if len(self.tickets) > 1 else self.tickets[0]

    def leave(self, profile: Profile, ticket: Pass) -> None:
        pass

    def after(self, profile: Profile, headers: Mapping[str, str], retry_after_s: float | None) -> None:
        self.paused.append(retry_after_s)


def executor(adapter: ScriptedAdapter, gate: StubGate | None = None,
             auth: StubAuthoriser | None = None) -> Executor:
    return Executor({"api": PROFILE}, StubSessions(adapter),  # type: ignore[arg-type]
                    {"api": auth or StubAuthoriser()}, gate or StubGate())  # type: ignore[arg-type]


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
    assert "retry_unsafe" in outcome.record["error"]["message"]


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
