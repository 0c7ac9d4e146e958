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

#: The states a job of a batch can be counted in, as fields of the batch's hash.
WAITING, RETRYING, SUCCEEDED, FAILED = "waiting", "retrying", "succeeded", "failed"

# KEYS: batch hash, done set, retrying set, waiting set. ARGV: job id, state, ttl s.
# Moves the job into ``state`` out of any other; a finished job never moves again.
# Nothing is written for a batch whose record has expired. A job is in at most one
# interim set, so the look for it stops at the first hit. Expiry: finishing gives the
# batch's to the batch and its done set, and every 64th finish of a kind to the interim
# sets too, so a set that stays full through days of a slow batch lives on; an interim
# set gets it when it is created (Redis deletes a set that empties). So a wait writes
# no more than it must.
_MOVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local id, state = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[2], id) == 1 then return 0 end
local interim = {waiting = KEYS[4], retrying = KEYS[3]}
local target = interim[state] or KEYS[2]
if redis.call('SADD', target, id) == 0 then return 0 end
for _, name in ipairs({'waiting', 'retrying'}) do
  if name ~= state and redis.call('SREM', interim[name], id) == 1 then
    redis.call('HINCRBY', KEYS[1], name, -1)
    break
  end
end
local n = redis.call('HINCRBY', KEYS[1], state, 1)
if interim[state] == nil then
  redis.call('EXPIRE', target, ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  if n % 64 == 0 then
    redis.call('EXPIRE', KEYS[3], ARGV[3])
    redis.call('EXPIRE', KEYS[4], ARGV[3])
  end
elseif n == 1 then
  redis.call('EXPIRE', target, ARGV[3])
end
return 1
"""


class BatchCounters:
    """Updates a batch's counts (waiting, retrying, succeeded, failed) and adds jobs found by workers."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._move = client.register_script(_MOVE)

    def _keys(self, batch_id: str) -> list[str]:
        return [self.keys.batch(batch_id), self.keys.batch_done(batch_id),
                self.keys.batch_retrying(batch_id), self.keys.batch_waiting(batch_id)]

    def count(self, batch_id: str, job_id: str, state: str, client: Any = None) -> bool:
        """Count the job in ``state``; False when that changed nothing (already counted)."""
        return bool(self._move(keys=self._keys(batch_id), args=[job_id, state, self.ttl_s],
                               client=client))

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
