"""The workers' result backend: Celery's Redis backend, where a late RETRY never replaces a result.

A job retried with a short countdown (at once after a token renewal) can finish on
another thread before Celery has stored the RETRY state of the run that asked for
the retry. Celery guards only SUCCESS, with a read then a write; here the check and
the write are one Lua script, and every finished state is kept.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend

from worker.errors import WaitLater
from worker.lua import script
from worker.redisurl import is_redis_url, is_sentinel_url


class _KeepsFinished(RedisBackend):
    """Stores a job's interim states only while it has not finished, and no wait as a retry."""

    def mark_as_retry(self, task_id: str, exc: Any, traceback: Any = None, request: Any = None) -> Any:
        if isinstance(exc, WaitLater):
            # Waiting for the rate budget or a pause is no retry: the batch counters and
            # Flower's task-retried event say what the job waits for; nothing to store.
            return None
        return super().mark_as_retry(task_id, exc, traceback, request)

    def _set_with_state(self, key: Any, value: Any, state: str) -> Any:
        if state in states.READY_STATES:
            return super()._set_with_state(key, value, state)
        return self.ensure(self._set_unless_finished, (key, value))

    def _set_unless_finished(self, key: Any, value: Any) -> Any:
        store = script(self.client, "resultstore_store.lua")
        return store(keys=[key], args=[value, int(self.expires or 0)])


class FinishedStaysFinished(_KeepsFinished):
    """Celery's Redis backend, where a late RETRY never replaces a result."""


class FinishedStaysFinishedSentinel(_KeepsFinished, SentinelBackend):
    """Celery's Sentinel backend (the primary a Sentinel names), with the same guard."""


def guarded(result_backend: str) -> str:
    """The backend URL that makes Celery use the guarded backend for a Redis (or Sentinel) one."""
    if is_sentinel_url(result_backend):
        return f"{__name__}:FinishedStaysFinishedSentinel+{result_backend}"
    if is_redis_url(result_backend):
        return f"{__name__}:FinishedStaysFinished+{result_backend}"
    return result_backend
