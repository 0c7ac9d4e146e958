"""Marks an unsafe request in flight, so a redelivered job never sends it a second time.

A POST or PATCH without ``retry_unsafe`` may change something on the API each time it
is sent. Before it goes out, its job is marked *sent* in Redis; the mark goes when the
attempt ends in a retry (the API said it did not act) or when the job's outcome is
stored. A redelivered job (its worker stopped mid-request, or before storing what
came back) that finds the mark does not send again: it fails with ``OutcomeUnknown``
and the user decides.
"""

from __future__ import annotations

import redis

from worker.jobs import UNSAFE_METHODS, Job
from worker.keys import Keys

#: Error type of a job whose request was in flight when its worker stopped.
OUTCOME_UNKNOWN = "OutcomeUnknown"
OUTCOME_UNKNOWN_MESSAGE = ("the worker stopped while the request was in flight; "
                           "not resent without retry_unsafe")


def guarded(job: Job) -> bool:
    """True when sending ``job`` twice could do harm, so it is marked while in flight."""
    return job.method in UNSAFE_METHODS and not job.retry_unsafe


class InFlight:
    """The in-flight marks of unsafe jobs, one key per job id, kept as long as results."""

    def __init__(self, client: redis.Redis[bytes], keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s

    def begin(self, job_id: str) -> bool:
        """Mark the job in flight; False when an earlier run sent it with no outcome stored."""
        return bool(self.client.set(self.keys.job_sent(job_id), 1, nx=True, ex=self.ttl_s))

    def end(self, job_id: str) -> None:
        """Forget the mark: the attempt's outcome is stored, or it may safely be sent again."""
        self.client.delete(self.keys.job_sent(job_id))
