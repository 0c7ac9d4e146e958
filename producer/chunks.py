"""One chunk of a batch's jobs: recorded, published, then noted as published.

A GET repeated in the batch is recorded and answered by the first one, not run.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from producer.batches import BatchStore
from producer.publish import Outgoing, Publisher, RedisBulkPublisher
from worker.jobs import Job

#: Input lines recorded and published per step of a bulk enqueue.
PUBLISH_CHUNK = 500


@dataclass(frozen=True)
class Rejected:
    """An input refused at enqueue time: which line, which field, and why."""

    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "job"
        what = f"field {self.field!r}: " if self.field else ""
        return f"{where}: {what}{self.message}"


def fingerprint(job: Job) -> str:
    """What makes two GETs the same request: profile, URL, params, headers, cache settings."""
    same = {"api": job.api, "url": job.url, "params": job.params, "headers": job.headers,
            "cache": job.cache, "refresh": job.refresh, "paginate": job.paginate, "page": job.page}
    return hashlib.blake2b(json.dumps(same, sort_keys=True).encode(), digest_size=16).hexdigest()


def publish_chunk(
    store: BatchStore,
    publisher: Publisher,
    batch_id: str,
    jobs: list[tuple[int | None, Job]],
    refused: list[Rejected] | None = None,
    upto_line: int | None = None,
) -> list[str]:
    """Record, publish, then note one chunk; a GET repeated in the batch is recorded, not run."""
    ids = [str(uuid.uuid4()) for _ in jobs]
    gets = [(i, fingerprint(job)) for i, (_, job) in enumerate(jobs) if job.method == "GET"]
    first = store.claim(batch_id, [(fp, ids[i]) for i, fp in gets])
    same_as: dict[int, str] = {i: orig for (i, _), orig in zip(gets, first, strict=True) if orig}
    entries = []
    outgoing = []
    for i, (job_id, (line, job)) in enumerate(zip(ids, jobs, strict=True)):
        message = job.to_message()
        entry: dict[str, Any] = {"id": job_id, "line": line, "job": message}
        if i in same_as:
            entry["same_as"] = same_as[i]
        else:
            outgoing.append(Outgoing(job_id, {"job": message, "batch_id": batch_id},
                                     job.shown_arguments(batch_id)))
        entries.append(entry)
    rejected = [{"line": r.line, "field": r.field, "message": r.message} for r in refused or []]
    store.add(batch_id, entries, rejected, upto_line)
    publish_noted(store, publisher, batch_id, outgoing, upto_line, len(jobs))
    return ids


def publish_noted(store: BatchStore, publisher: Publisher, batch_id: str,
                  outgoing: list[Outgoing], upto_line: int | None, count: int) -> None:
    """Publish, then note the input lines published.

    On a Redis broker that is also the batch's Redis (the default), both are one
    transaction, so an enqueue killed in between leaves no chunk in doubt.
    """
    if isinstance(publisher, RedisBulkPublisher) and publisher.shares(store.url):
        pipe = store.client.pipeline(transaction=True)
        publisher.push(pipe, outgoing)
        store.published(batch_id, upto_line, count, pipe)
        pipe.execute()
        return
    publisher.publish(outgoing)
    store.published(batch_id, upto_line, count)
