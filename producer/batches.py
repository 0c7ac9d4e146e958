"""Batches kept in Redis beside the results, so any machine can follow one later."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from worker.batchcount import BatchCounters
from worker.keys import Keys
from worker.lua import script

#: Jobs read from Redis per round trip when following a batch.
CHUNK = 1000
#: Seconds an enqueue's lease lasts unless its process refreshes it: how long after an
#: enqueue died its batch shows as interrupted.
ENQUEUE_LEASE_S = 10
#: The most batches the index (``<prefix>:batches``) lists; the oldest are dropped first.
MAX_INDEXED = 100_000


class BatchNotFound(LookupError):
    """No batch with that id (never made, or expired with its results)."""


@dataclass(frozen=True)
class Enqueuing:
    """How far the enqueue of a batch got, from its record and its enqueue's lease."""

    #: Every job it was given is published (or the enqueue stopped on an error).
    done: bool
    #: The enqueue stopped without finishing: its process died or was stopped.
    interrupted: bool
    #: Input lines up to here are published (refused lines included).
    published_line: int
    #: Jobs published.
    published: int
    #: Why the enqueue stopped before the end of its input, when it stopped on an error.
    stopped: str

    @property
    def next_line(self) -> int:
        return self.published_line + 1

    def describe(self, batch_id: str) -> str | None:
        """One line for ``status`` and ``watch`` when the enqueue did not end normally."""
        if self.interrupted:
            return (f"enqueue interrupted at line {self.next_line} ({self.published} jobs "
                    f"published); add the rest with: reqworker enqueue FILE --resume {batch_id}")
        if self.stopped:
            return (f"enqueue stopped at line {self.next_line}: {self.stopped} "
                    f"({self.published} jobs published)")
        return None


class BatchStore:
    """Batch records: a hash of facts and counts, a list of jobs, a list of refused lines."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        keys: Keys,
        ttl_s: int,
        meta_key: Callable[[str], bytes | str],
        url: str | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._meta_key = meta_key
        #: The URL of this store's Redis, when known (see ``RedisBulkPublisher.shares``).
        self.url = url
        self._claim = script(client, "batches_claim.lua", package="producer")

    def create(self, batch_id: str, name: str | None) -> None:
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        facts: dict[str | bytes, str | int | float] = {
            "id": batch_id, "name": name or "", "created": now, "total": 0, "rejected": 0,
            "duplicates": 0, "succeeded": 0, "failed": 0, "retrying": 0, "waiting": 0,
            "enqueued": 0, "published": 0, "published_line": 0, "recorded_line": 0,
        }
        pipe.hset(self.keys.batch(batch_id), mapping=facts)
        pipe.expire(self.keys.batch(batch_id), self.ttl_s)
        pipe.set(self.keys.batch_enqueuing(batch_id), 1, ex=ENQUEUE_LEASE_S)
        # The index of batches forgets those whose records have expired, holds at most
        # MAX_INDEXED, and expires itself when no batch has been made for as long.
        index = self.keys.batches()
        pipe.zadd(index, {batch_id: now})
        pipe.zremrangebyscore(index, "-inf", now - self.ttl_s)
        pipe.zremrangebyrank(index, 0, -(MAX_INDEXED + 1))
        pipe.expire(index, self.ttl_s)
        pipe.execute()

    def counters(self) -> BatchCounters:
        """The counters workers keep, for counting jobs the producer finds finished."""
        return BatchCounters(self.client, self.keys, self.ttl_s)

    def claim(self, batch_id: str, fingerprints: list[tuple[str, str]]) -> list[str | None]:
        """For each (fingerprint, job id): None if the job is the first of its kind in the
        batch, else the id of the job that already runs it. One round trip."""
        if not fingerprints:
            return []
        first = self._claim(keys=[self.keys.batch_seen(batch_id)], args=[
            self.ttl_s, "\n".join(fp for fp, _ in fingerprints), "\n".join(i for _, i in fingerprints)])
        return [job_id or None for job_id in first.decode().split("\n")]

    def add(self, batch_id: str, entries: list[bytes], repeats: int, rejected: list[dict[str, Any]],
            upto_line: int | None = None) -> None:
        """Record jobs (before they are published) and refused lines, up to an input line.

        ``entries`` are the jobs' records as JSON text, ``repeats`` of them repeated GETs.
        """
        pipe = self.client.pipeline(transaction=False)
        if upto_line is not None:
            pipe.hset(self.keys.batch(batch_id), "recorded_line", upto_line)
        if entries:
            pipe.rpush(self.keys.batch_jobs(batch_id), *entries)
            pipe.expire(self.keys.batch_jobs(batch_id), self.ttl_s)
            pipe.hincrby(self.keys.batch(batch_id), "total", len(entries) - repeats)
            pipe.hincrby(self.keys.batch(batch_id), "duplicates", repeats)
        if rejected:
            pipe.rpush(self.keys.batch_rejected(batch_id), *(json.dumps(r) for r in rejected))
            pipe.expire(self.keys.batch_rejected(batch_id), self.ttl_s)
            pipe.hincrby(self.keys.batch(batch_id), "rejected", len(rejected))
        pipe.execute()

    def published(self, batch_id: str, upto_line: int | None, count: int,
                  pipe: Any = None) -> None:
        """Note that the jobs recorded up to an input line are on the queue.

        With ``pipe`` (a pipeline on this store's Redis) the note goes out with it.
        """
        own = pipe is None
        if own:
            pipe = self.client.pipeline(transaction=False)
        if upto_line is not None:
            pipe.hset(self.keys.batch(batch_id), "published_line", upto_line)
        pipe.hincrby(self.keys.batch(batch_id), "published", count)
        if own:
            pipe.execute()

    def finish(self, batch_id: str, stopped: str | None = None) -> None:
        """Mark the batch enqueued: every job it was given is published, or ``stopped`` says why not."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.batch(batch_id), mapping={"enqueued": 1, "stopped": stopped or ""})
        pipe.delete(self.keys.batch_enqueuing(batch_id))
        pipe.execute()

    def hold_lease(self, batch_id: str) -> bool:
        """Refresh the enqueue's lease; False when it is gone (lapsed, or the enqueue ended)."""
        key = self.keys.batch_enqueuing(batch_id)
        return bool(self.client.set(key, 1, xx=True, ex=ENQUEUE_LEASE_S))

    def take_lease(self, batch_id: str) -> bool:
        """Take the lease of a batch whose enqueue is over or dead; False while one is alive."""
        key = self.keys.batch_enqueuing(batch_id)
        return bool(self.client.set(key, 1, nx=True, ex=ENQUEUE_LEASE_S))

    def drop_lease(self, batch_id: str) -> None:
        self.client.delete(self.keys.batch_enqueuing(batch_id))

    def enqueuing(self, batch_id: str, facts: dict[str, str]) -> Enqueuing:
        """How far the batch's enqueue got; one more read only while it is not done."""
        done = facts.get("enqueued") == "1"
        # Batches recorded before enqueues held a lease have no "published_line".
        alive = done or "published_line" not in facts \
            or bool(self.client.exists(self.keys.batch_enqueuing(batch_id)))
        return Enqueuing(done, not alive, int(facts.get("published_line") or 0),
                         int(facts.get("published") or 0), facts.get("stopped") or "")

    def facts(self, batch_id: str) -> dict[str, str]:
        raw = self.client.hgetall(self.keys.batch(batch_id))
        if not raw:
            raise BatchNotFound(f"no batch {batch_id!r} (unknown, or expired with its results)")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def recent(self, limit: int) -> list[tuple[str, dict[str, str]]]:
        """(id, facts) of the newest batches still kept, newest first; forgets expired ones."""
        found: list[tuple[str, dict[str, str]]] = []
        expired: list[bytes] = []
        start = 0
        while len(found) < limit:
            ids = self.client.zrevrange(self.keys.batches(), start, start + limit - 1)
            if not ids:
                break
            start += len(ids)
            pipe = self.client.pipeline(transaction=False)
            for raw_id in ids:
                pipe.hgetall(self.keys.batch(raw_id.decode()))
            for raw_id, raw in zip(ids, pipe.execute(), strict=True):
                if not raw:
                    expired.append(raw_id)  # its record expired with its results
                elif len(found) < limit:
                    found.append((raw_id.decode(), {k.decode(): v.decode() for k, v in raw.items()}))
        if expired:
            self.client.zrem(self.keys.batches(), *expired)
        return found

    def entries(self, batch_id: str) -> Iterator[list[dict[str, Any]]]:
        """The batch's jobs, a chunk at a time, in the order they were added."""
        start = 0
        while True:
            raw = self.client.lrange(self.keys.batch_jobs(batch_id), start, start + CHUNK - 1)
            if not raw:
                return
            yield [json.loads(item) for item in raw]
            start += len(raw)

    def rejected(self, batch_id: str) -> list[dict[str, Any]]:
        key = self.keys.batch_rejected(batch_id)
        return [json.loads(r) for r in self.client.lrange(key, 0, -1)]

    def metas(self, job_ids: Iterable[str]) -> list[bytes | None]:
        """What the result backend holds for each job, in one round trip."""
        ids = list(job_ids)
        if not ids:
            return []
        return self.client.mget([self._meta_key(job_id) for job_id in ids])
