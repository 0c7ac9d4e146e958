"""Batch counters that workers keep as jobs finish or wait, so progress never polls every job.

A job is in at most one counted state: *waiting* (pacing: the rate budget, a
concurrency slot, a pause), *retrying* (a backoff after a failure) or finished
(*succeeded* or *failed*). A job counted as finished stays so, and counting it again
changes nothing: the finished state comes from the stored result, so whoever sees
that result (the worker that stored it, a redelivery of its message, a producer
settling a stalled batch, ``reqworker recount``) may count it.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from worker.keys import Keys
from worker.lua import queue, script

#: The states a job of a batch can be counted in, as fields of the batch's hash.
WAITING, RETRYING, SUCCEEDED, FAILED = "waiting", "retrying", "succeeded", "failed"


class BatchCounters:
    """Updates a batch's counts (waiting, retrying, succeeded, failed) and adds jobs found by workers."""

    def __init__(self, client: redis.Redis[bytes], keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._move = script(client, "batchcount_move.lua")

    def _keys(self, batch_id: str) -> list[str]:
        return [self.keys.batch(batch_id), self.keys.batch_done(batch_id),
                self.keys.batch_retrying(batch_id), self.keys.batch_waiting(batch_id)]

    def count(self, batch_id: str, job_id: str, state: str, client: Any = None) -> bool:
        """Count the job in ``state``; False when that changed nothing (already counted)."""
        return bool(self._move(keys=self._keys(batch_id), args=[job_id, state, self.ttl_s],
                               client=client))

    @property
    def move_script(self) -> Any:
        """The script that moves a job between counted states."""
        return self._move

    def queue_count(self, pipe: Any, batch_id: str, job_id: str, state: str) -> None:
        """``count`` queued on a pipeline, by SHA (``worker.lua.queue``)."""
        queue(pipe, self._move, self._keys(batch_id), [job_id, state, self.ttl_s])

    def finished(self, batch_id: str, job_id: str, *, ok: bool) -> bool:
        return self.count(batch_id, job_id, SUCCEEDED if ok else FAILED)

    def retrying(self, batch_id: str, job_id: str) -> bool:
        return self.count(batch_id, job_id, RETRYING)

    def waiting(self, batch_id: str, job_id: str) -> bool:
        return self.count(batch_id, job_id, WAITING)

    def add_job(self, batch_id: str, entry: dict[str, Any]) -> None:
        """Record a job a worker adds to the batch (a next page) before it is published."""
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.keys.batch_jobs(batch_id), json.dumps(entry))
        pipe.hincrby(self.keys.batch(batch_id), "total", 1)
        pipe.expire(self.keys.batch_jobs(batch_id), self.ttl_s)
        pipe.expire(self.keys.batch(batch_id), self.ttl_s)
        pipe.execute()
