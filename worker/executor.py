"""Runs one attempt of a job and decides what comes next: done, run again after a countdown, or fail."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from worker import metrics
from worker.admission import Gate, Pass, Refused, Wait
from worker.auth import Authoriser, Credentials
from worker.backoff import LONGEST_WAIT_S, GiveUp, bounded_countdown, countdown, parse_retry_after
from worker.bounds import HeldBack
from worker.errors import AuthError
from worker.http import Attempt, Sessions, response_body, send
from worker.inflight import OUTCOME_UNKNOWN, OUTCOME_UNKNOWN_MESSAGE, InFlight, guarded
from worker.jobs import UNSAFE_METHODS, Job, JobError, parse_job
from worker.paginate import next_page
from worker.profiles import Profile
from worker.redact import shown_url, url_secrets
from worker.redirects import refused_redirect
from worker.resultrecord import Error, result_record
from worker.secret import scrub
from worker.urls import is_under_base
from worker.verdicts import Verdict, api_message, classify_exception, classify_status

log = logging.getLogger("reqworker.executor")

#: How many times one job may ask for a new token after a 401.
MAX_REAUTHS = 1


@dataclass(frozen=True)
class Spent:
    """What a job has spent so far, carried from one run of its task to the next.

    On the wire it is the task's ``progress`` keyword argument (``to_message``).
    """

    #: HTTP attempts made (every one, including those after a token renewal).
    attempts: int = 0
    #: Backoff retries spent: the ones bounded by ``backoff.count``.
    retries: int = 0
    #: Token renewals this job asked for after a 401.
    reauths: int = 0
    #: Times the job waited (rate budget, concurrency slot, pause): no attempt spent.
    waits: int = 0
    #: When the job's reserved slot of the rate budget is due (epoch ms); 0 for none.
    slot_at_ms: int = 0

    @classmethod
    def from_message(cls, raw: Mapping[str, Any] | None) -> Spent:
        if not raw:
            return cls()
        names = ("attempts", "retries", "reauths", "waits", "slot_at_ms")
        return cls(**{k: int(raw.get(k, 0)) for k in names})

    def to_message(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class JobContext:
    """Who a run belongs to: its Celery task id and batch."""

    job_id: str
    batch_id: str | None = None


@dataclass(frozen=True)
class Done:
    record: dict[str, Any]
    #: The next page of a paginated collection, to run as a job of the same batch.
    next_job: Job | None = None


@dataclass(frozen=True)
class RunAgain:
    """Run the job again after ``countdown_s``: a backoff retry, a wait, or a token renewal."""

    countdown_s: float
    spent: Spent
    reason: str
    #: True for a backoff retry, which spends one of ``backoff.count``; a wait or a renewal does not.
    backoff: bool = True


@dataclass(frozen=True)
class Failed:
    record: dict[str, Any]


Outcome = Done | RunAgain | Failed


class Executor:
    """Everything one job run needs, built once per worker process."""

    def __init__(
        self,
        profiles: Mapping[str, Profile],
        sessions: Sessions,
        authorisers: Mapping[str, Authoriser],
        gate: Gate,
        inflight: InFlight | None = None,
    ) -> None:
        self.profiles = profiles
        self.sessions = sessions
        self.authorisers = authorisers
        self.gate = gate
        self.inflight = inflight
        #: The credential headers of this thread's current run, to scrub from its errors.
        self._sent = threading.local()

    def run(self, message: Mapping[str, Any], spent: Spent, ctx: JobContext) -> Outcome:
        self._sent.headers = {}
        outcome = self._run(message, spent, ctx)
        if not isinstance(message, Mapping):  # not even a job: failed, with nothing to scrub
            return outcome
        profile = self.profiles.get(str(message.get("api")))
        if profile is None or isinstance(outcome, Done):
            return outcome
        # No secret of the profile may reach a stored record, Flower or a log line.
        secrets = secrets_of(profile, self._sent.headers) + url_secrets(str(message.get("url") or ""))
        if isinstance(outcome, Failed):
            return Failed(scrub_record(outcome.record, secrets))
        longest = profile.backoff.longest_countdown_s if outcome.backoff else LONGEST_WAIT_S
        countdown_s = bounded_countdown(outcome.countdown_s, longest)
        return replace(outcome, countdown_s=countdown_s, reason=scrub(outcome.reason, secrets))

    def unschedulable(self, message: Mapping[str, Any], spent: Spent, ctx: JobContext,
                      why: str) -> dict[str, Any]:
        """The failed record of a job whose retry could not be put back on the queue."""
        return _record(ctx, message, spent, error=("RetryError", None, why))

    def _run(self, message: Mapping[str, Any], spent: Spent, ctx: JobContext) -> Outcome:
        try:
            job = parse_job(message, self.profiles)
        except JobError as exc:
            return Failed(_record(ctx, message, spent, error=("JobError", None, str(exc))))
        profile = self.profiles[job.api]
        authoriser = self.authorisers[job.api]
        try:
            creds = authoriser.credentials()
        except AuthError as exc:
            if exc.retryable:
                return self._retry(job, profile, spent, ctx, None, f"credentials: {exc}")
            return Failed(_record(ctx, job, spent, error=("AuthError", None, str(exc))))
        self._sent.headers = creds.headers
        session = self.sessions.for_job(job)
        if job.uses_cache and not job.refresh and self.gate.budgets(profile):
            # A cache hit costs the API nothing, so it must not spend the shared budget.
            cached = send(session, job, profile, creds.headers, only_if_cached=True)
            if cached.from_cache and cached.response is not None:
                metrics.attempted(job, cached)
                spent = replace(spent, attempts=spent.attempts + 1)
                return _done(ctx, job, profile, spent, cached)
        if job.uses_cache and not job.refresh and not self.gate.budgets(profile):
            # Nothing to spend, so the one check, a pause of the profile, is made just
            # before the request goes out: a cache hit makes none.
            try:
                attempt = send(session, job, profile, creds.headers,
                               admit=lambda: self._admit(profile, spent))
            except HeldBack as held:
                return self._held(ctx, job, profile, spent, held.ticket)
            marks = None
        else:
            ticket = self._enter(profile, spent)
            if not isinstance(ticket, Pass):
                return self._held(ctx, job, profile, spent, ticket)
            marks = self.inflight if guarded(job) else None
            try:
                if marks is not None and not marks.begin(ctx.job_id):
                    error = (OUTCOME_UNKNOWN, None, OUTCOME_UNKNOWN_MESSAGE)
                    return Failed(_record(ctx, job, spent, error=error))
                attempt = send(session, job, profile, creds.headers)
            finally:
                self.gate.leave(profile, ticket)
        metrics.attempted(job, attempt)
        spent = replace(spent, attempts=spent.attempts + 1, slot_at_ms=0)
        if attempt.response is None:
            outcome = self._after_exception(job, profile, spent, ctx, attempt)
        else:
            outcome = self._after_response(job, profile, authoriser, creds, spent, ctx, attempt)
        if marks is not None and isinstance(outcome, RunAgain):
            marks.end(ctx.job_id)  # the API did not act: the retry may send it again
        return outcome

    def _enter(self, profile: Profile, spent: Spent) -> Pass | Wait | Refused:
        slot_at = spent.slot_at_ms / 1000 if spent.slot_at_ms else None
        return self.gate.enter(profile, slot_at=slot_at, waits=spent.waits)

    def _admit(self, profile: Profile, spent: Spent) -> None:
        """The check ``send`` makes before a request goes out; raises ``HeldBack``."""
        ticket = self._enter(profile, spent)
        if not isinstance(ticket, Pass):
            raise HeldBack(ticket)
        self.gate.leave(profile, ticket)  # a profile without budgets holds no slot

    @staticmethod
    def _held(ctx: JobContext, job: Job, profile: Profile, spent: Spent,
              ticket: Wait | Refused) -> Outcome:
        """A job the fleet's limits hold back: it fails (a pause too long), or waits."""
        if isinstance(ticket, Refused):
            return Failed(_record(ctx, job, spent, error=("RateLimitError", None, ticket.reason)))
        metrics.waited(profile.name, ticket.kind)
        slot_at_ms = round(ticket.slot_at * 1000) if ticket.slot_at is not None else 0
        waited = replace(spent, waits=spent.waits + 1, slot_at_ms=slot_at_ms)
        return RunAgain(ticket.seconds, waited, ticket.reason, backoff=False)

    def _after_response(
        self,
        job: Job,
        profile: Profile,
        authoriser: Authoriser,
        creds: Credentials,
        spent: Spent,
        ctx: JobContext,
        attempt: Attempt,
    ) -> Outcome:
        response = attempt.response
        assert response is not None
        verdict = classify_status(response.status_code, job.method, job.retry_unsafe)
        retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
        if verdict is Verdict.RETRY or profile.adaptive_rate:
            self.gate.after(profile, response.headers,
                            retry_after_s if verdict is Verdict.RETRY else None)
        if verdict is Verdict.SUCCESS:
            return _done(ctx, job, profile, spent, attempt)
        described = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
        if verdict is Verdict.REAUTH and not is_under_base(response.url or job.url, profile.base_url):
            # A foreign host (reached by a redirect) cannot judge the profile's token.
            error = ("APIError", 401, f"{described} from {shown_url(response.url)}, outside base_url: "
                                      "the credentials were not renewed")
            return Failed(_record(ctx, job, spent, attempt, error=error))
        if verdict is Verdict.REAUTH:
            if spent.reauths < MAX_REAUTHS and authoriser.renew(creds):
                again = replace(spent, reauths=spent.reauths + 1)
                return RunAgain(0.0, again, f"{described}: credentials renewed, trying again",
                             backoff=False)
            error = _unauthorised(job, response, renewed=spent.reauths > 0)
            return Failed(_record(ctx, job, spent, attempt, error=error))
        if verdict is Verdict.RETRY:
            return self._retry(job, profile, spent, ctx, attempt, described, retry_after_s)
        explanation = api_message(response_body(response), response.reason or "")
        return Failed(_record(ctx, job, spent, attempt,
                              error=("APIError", response.status_code, explanation)))

    def _after_exception(
        self, job: Job, profile: Profile, spent: Spent, ctx: JobContext, attempt: Attempt
    ) -> Outcome:
        exc = attempt.error
        assert exc is not None
        described = f"{type(exc).__name__}: {exc}"
        if classify_exception(exc, job.method, job.retry_unsafe) is Verdict.RETRY:
            return self._retry(job, profile, spent, ctx, attempt, described)
        if job.method in UNSAFE_METHODS and classify_exception(exc, "GET") is Verdict.RETRY:
            described += " (not retried: the request may have reached the API; see retry_unsafe)"
        error = (type(exc).__name__, None, described)
        return Failed(_record(ctx, job, spent, attempt, error=error))

    def _retry(
        self,
        job: Job,
        profile: Profile,
        spent: Spent,
        ctx: JobContext,
        attempt: Attempt | None,
        described: str,
        retry_after_s: float | None = None,
    ) -> Outcome:
        wait = countdown(profile.backoff, spent.retries, retry_after_s)
        if isinstance(wait, GiveUp):
            response = attempt.response if attempt is not None else None
            status = response.status_code if response is not None else None
            kind = "APIError" if status else _error_type(attempt)
            error = (kind, status, f"{wait.reason}; last: {described}")
            return Failed(_record(ctx, job, spent, attempt, error=error))
        n = spent.retries + 1
        reason = f"{described}; retry {n} of {profile.backoff.count} in {wait:g} s"
        return RunAgain(wait, replace(spent, retries=n, slot_at_ms=0), reason)


def _done(ctx: JobContext, job: Job, profile: Profile, spent: Spent, attempt: Attempt) -> Done:
    """A successful run: its record (saying why a redirect was not followed) and the next page."""
    response = attempt.response
    assert response is not None
    record = _record(ctx, job, spent, attempt)
    refused = refused_redirect(response, job.method, profile)
    if refused:
        record["redirect_refused"] = refused
    following, stopped = next_page(job, response, record["body"], profile)
    if stopped:
        record["pagination_stopped"] = stopped
    return Done(record, following)


def secrets_of(profile: Profile, sent: Mapping[str, str]) -> list[str]:
    """The profile's secrets, and the credential headers a run sent (with and without prefix)."""
    values = [*profile.auth.secret_values, *sent.values()]
    prefix = profile.auth.header_prefix
    values += [v[len(prefix):] for v in sent.values() if prefix and v.startswith(prefix)]
    return values


def scrub_record(record: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """A failed record whose error message holds none of ``secrets``."""
    error = record.get("error")
    if not error or not isinstance(error.get("message"), str):
        return record
    return {**record, "error": {**error, "message": scrub(error["message"], secrets)}}


def _error_type(attempt: Attempt | None) -> str:
    if attempt is not None and attempt.error is not None:
        return type(attempt.error).__name__
    return "AuthError"


def _unauthorised(job: Job, response: Any, *, renewed: bool) -> tuple[str, int, str]:
    message = api_message(response_body(response), response.reason or "")
    why = "even after they were renewed" if renewed else "and they cannot be renewed"
    return (
        "APIError",
        response.status_code,
        f"{message}: the API refused the credentials of profile {job.api!r} {why}",
    )


def _record(
    ctx: JobContext,
    job: Job | Mapping[str, Any],
    spent: Spent,
    attempt: Attempt | None = None,
    *,
    error: Error | None = None,
) -> dict[str, Any]:
    """The result record of a job this run finished (``worker.resultrecord``)."""
    # A job that is not even an object (a string) is described by what it is.
    view = job.to_message() if isinstance(job, Job) else dict(job) if isinstance(job, Mapping) else {}
    response = attempt.response if attempt else None
    return result_record(
        key=view.get("key"),
        job_id=ctx.job_id,
        batch_id=ctx.batch_id,
        api=view.get("api"),
        method=view.get("method", "GET"),
        url=shown_url(str(view.get("url") or view.get("path") or "")),
        status_code=response.status_code if response is not None else None,
        body=response_body(response) if response is not None else None,
        from_cache=attempt.from_cache if attempt else False,
        attempts=spent.attempts,
        elapsed_ms=attempt.elapsed_ms if attempt else 0,
        page=view.get("page", 1) if view.get("paginate") else None,
        error=error,
    )
