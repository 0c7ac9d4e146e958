"""Batch counters that workers keep as jobs finish, so progress never polls every job."""

from __future__ import annotations

import json
from typing import Any

import redis

from worker.keys import Keys

# KEYS: batch hash, done set, retrying set. ARGV: job id, "succeeded"|"failed", ttl s.
# A job is counted once however often it is delivered. Every key touched gets the
# batch's expiry again: a HINCRBY on a hash that had expired would otherwise live for ever.
_FINISH = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
if redis.call('SREM', KEYS[3], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'retrying', -1) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: batch hash, done set, retrying set. ARGV: job id, ttl s.
_RETRYING = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'retrying', 1) end
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class BatchCounters:
    """Updates a batch's counts (succeeded, failed, retrying) and adds jobs found by workers."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._finish = client.register_script(_FINISH)
        self._retrying = client.register_script(_RETRYING)

    def _keys(self, batch_id: str) -> list[str]:
        return [self.keys.batch(batch_id), self.keys.batch_done(batch_id),
                self.keys.batch_retrying(batch_id)]

    def finished(self, batch_id: str, job_id: str, *, ok: bool) -> None:
        state = "succeeded" if ok else "failed"
        self._finish(keys=self._keys(batch_id), args=[job_id, state, self.ttl_s])

    def retrying(self, batch_id: str, job_id: str) -> None:
        self._retrying(keys=self._keys(batch_id), args=[job_id, self.ttl_s])

    def add_job(self, batch_id: str, entry: dict[str, Any]) -> None:
        """Record a job a worker adds to the batch (a next page) before it is published."""
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.keys.batch_jobs(batch_id), json.dumps(entry))
        pipe.hincrby(self.keys.batch(batch_id), "total", 1)
        pipe.expire(self.keys.batch_jobs(batch_id), self.ttl_s)
        pipe.expire(self.keys.batch(batch_id), self.ttl_s)
        pipe.execute()
