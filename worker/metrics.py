"""What a worker counts for Prometheus: requests, jobs, retries, waits, cache, token renewals.

Each recording function is one line at its call site (executor, task, gate, token store).
Labels are the profile name and small closed sets (a status code, an outcome, a reason);
never a URL, a token or a body. Values live in this process, or in the per-worker
directory of ``PROMETHEUS_MULTIPROC_DIR`` that ``reqworker worker --metrics-port`` sets up,
so a prefork pool's children add up (see ``worker.metricserver``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from worker.http import Attempt
    from worker.jobs import Job

#: What a profile name may look like (as ``worker.profiles`` checks it); anything else in a
#: message is counted under "unknown", so a stray message cannot add label values.
_API_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: Seconds: from a loopback cache miss to a slow API's whole timeout.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("reqworker_requests", "HTTP attempts sent to the API, by status code "
                   "('error': a connection error or timeout)", ["api", "status"])
JOBS = Counter("reqworker_jobs", "Jobs finished, by outcome (succeeded, failed)", ["api", "outcome"])
RETRIES = Counter("reqworker_retries", "Backoff retries (each spends one of backoff.count)", ["api"])
WAITS = Counter("reqworker_waits", "Times a job waited for the rate budget, a concurrency slot "
                "or a pause (waits spend no attempt)", ["api", "reason"])
CACHE = Counter("reqworker_cache", "GET cache look-ups, by result (hit, miss)", ["api", "result"])
RENEWALS = Counter("reqworker_token_renewals", "Shared tokens this worker obtained from the "
                   "token endpoint for the whole fleet", ["api"])
DURATION = Histogram("reqworker_request_duration_seconds", "Duration of HTTP attempts sent to the API",
                     ["api"], buckets=DURATION_BUCKETS_S)


def api_label(api: Any) -> str:
    return api if isinstance(api, str) and _API_NAME.fullmatch(api) else "unknown"


def attempted(job: Job, attempt: Attempt) -> None:
    """One attempt made: a cache hit, or a request the API saw (with a cache miss if it looked)."""
    if attempt.from_cache:
        CACHE.labels(job.api, "hit").inc()
        return
    status = str(attempt.response.status_code) if attempt.response is not None else "error"
    REQUESTS.labels(job.api, status).inc()
    DURATION.labels(job.api).observe(attempt.elapsed_ms / 1000)
    if job.uses_cache and not job.refresh:
        CACHE.labels(job.api, "miss").inc()


def waited(api: str, reason: str) -> None:
    """A job waited: ``reason`` is "rate", "concurrency" or "pause"."""
    WAITS.labels(api, reason).inc()


def ended(message: Any, *, succeeded: bool) -> None:
    """The job ``message`` ended: it succeeded, or failed for good."""
    JOBS.labels(_api_of(message), "succeeded" if succeeded else "failed").inc()


def retried(message: Any) -> None:
    """The job ``message`` runs again after a backoff countdown (a wait is not a retry)."""
    RETRIES.labels(_api_of(message)).inc()


def _api_of(message: Any) -> str:
    return api_label(message.get("api") if isinstance(message, Mapping) else None)


def token_renewed(api: str) -> None:
    RENEWALS.labels(api).inc()
