"""Which jobs of a bundle were settled before its message came again.

A bundle's message is acknowledged after its last job. When its worker dies before
that, the message is delivered again, and its jobs that finished (their result is
stored) or left the bundle to run again alone (a backoff, a pause: marked here when
they leave) are not run a second time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from worker.keys import Keys

FINISHED_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class Handoffs:
    """The marks of jobs that left their bundle, beside the results (one key per job)."""

    def __init__(self, client: redis.Redis[bytes], keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s

    def mark(self, job_id: str) -> None:
        """The job left its bundle: a message of its own runs it from now on."""
        self.client.set(self.keys.job_handed(job_id), 1, ex=self.ttl_s)

    def settled(self, job_ids: Sequence[str], meta_keys: Sequence[bytes | str]) -> dict[str, str]:
        """Of ``job_ids`` (result keys ``meta_keys``), the ones already settled: id -> its
        finished state (SUCCESS, FAILURE, REVOKED), or "HANDED" for a job that left."""
        handed = [self.keys.job_handed(job_id) for job_id in job_ids]
        values = self.client.mget([*meta_keys, *handed]) if job_ids else []
        metas, marks = values[:len(job_ids)], values[len(job_ids):]
        found: dict[str, str] = {}
        for job_id, meta, mark in zip(job_ids, metas, marks, strict=True):
            state = _state(meta)
            if state in FINISHED_STATES:
                found[job_id] = state
            elif mark is not None:
                found[job_id] = "HANDED"
        return found


def _state(meta: bytes | None) -> str | None:
    if meta is None:
        return None
    try:
        decoded = json.loads(meta)
    except ValueError:
        return None
    return str(decoded.get("status")) if isinstance(decoded, dict) else None
