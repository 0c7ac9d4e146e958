"""One chunk of a batch's jobs: recorded, published, then noted as published.

A GET repeated in the batch is recorded and answered by the first one, not run. Each
job's message is encoded once (by orjson where that reads back the same as ``json``),
for both its batch entry and its task message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from producer.batches import BatchStore
from producer.bundling import pack, packable
from producer.publish import Outgoing, Publisher, RedisBulkPublisher, random_uuids
from worker.jobs import Job
from worker.profiles import Profile

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


#: ``json.dumps(value, sort_keys=True)``, without making an encoder for every call.
_SORTED = json.JSONEncoder(sort_keys=True).encode


def _has_float(params: dict[str, Any]) -> bool:
    for value in params.values():
        if isinstance(value, float) or (isinstance(value, list)
                                        and any(isinstance(v, float) for v in value)):
            return True
    return False


def _plain(job: Job) -> bool:
    """True when orjson writes the job as ``json`` does, but for spacing and escapes: no
    float in it (orjson writes NaN and infinities as null), so nothing reads back otherwise."""
    return job.json is None and job.data is None and not _has_float(job.params)


def fingerprint(job: Job) -> str:
    """What makes two GETs the same request: profile, URL, params, headers, cache settings."""
    same = {"api": job.api, "url": job.url, "params": job.params, "headers": job.headers,
            "cache": job.cache, "refresh": job.refresh, "paginate": job.paginate, "page": job.page}
    if not _has_float(job.params):
        try:
            return hashlib.blake2b(orjson.dumps(same, option=orjson.OPT_SORT_KEYS),
                                   digest_size=16).hexdigest()
        except orjson.JSONEncodeError:
            pass  # an integer beyond 64 bits, a lone surrogate: the standard encoder writes it
    return hashlib.blake2b(_SORTED(same).encode(), digest_size=16).hexdigest()


def message_json(job: Job, message: dict[str, Any]) -> bytes:
    """``message`` (``job.to_message()``) as JSON text in UTF-8: by orjson where it is plain."""
    if _plain(job):
        try:
            return orjson.dumps(message)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(message).encode()


def publish_chunk(
    store: BatchStore,
    publisher: Publisher,
    batch_id: str,
    jobs: list[tuple[int | None, Job]],
    refused: list[Rejected] | None = None,
    upto_line: int | None = None,
    profiles: Mapping[str, Profile] | None = None,
) -> list[str]:
    """Record, publish, then note one chunk; a GET repeated in the batch is recorded, not run.

    With ``profiles``, jobs that may share a message are packed (``producer.bundling``).
    """
    ids = random_uuids(len(jobs))
    gets = [(i, fingerprint(job)) for i, (_, job) in enumerate(jobs) if job.method == "GET"]
    first = store.claim(batch_id, [(fp, ids[i]) for i, fp in gets])
    same_as: dict[int, str] = {i: orig for (i, _), orig in zip(gets, first, strict=True) if orig}
    # Each job's message is encoded once, into both its batch entry and its task's kwargs.
    entries = []
    outgoing = []
    batch_json = json.dumps(batch_id).encode()
    for i, (job_id, (line, job)) in enumerate(zip(ids, jobs, strict=True)):
        message = job.to_message()
        text = message_json(job, message)
        entry = b'{"id": "%b", "line": %b, "job": %b' % (
            job_id.encode(), b"null" if line is None else b"%d" % line, text)
        if i in same_as:
            entries.append(entry + b', "same_as": %b}' % json.dumps(same_as[i]).encode())
        else:
            entries.append(entry + b"}")
            outgoing.append(Outgoing(job_id, {"job": message, "batch_id": batch_id},
                                     job.shown_arguments(batch_id),
                                     b'{"job": %b, "batch_id": %b}' % (text, batch_json),
                                     packable=profiles is not None and packable(job, profiles),
                                     job_json=text))
    rejected = [{"line": r.line, "field": r.field, "message": r.message} for r in refused or []]
    store.add(batch_id, entries, len(same_as), rejected, upto_line)
    publish_noted(store, publisher, batch_id, outgoing, upto_line, len(jobs))
    return ids


def publish_noted(store: BatchStore, publisher: Publisher, batch_id: str,
                  outgoing: list[Outgoing], upto_line: int | None, count: int) -> None:
    """Publish, then note the input lines published.

    On a Redis broker that is also the batch's Redis (the default), both are one
    transaction, so an enqueue killed in between leaves no chunk in doubt. Jobs marked
    packable go out in bundles of up to the publisher's ``per_message``.
    """
    outgoing = pack(outgoing, publisher.per_message)
    if isinstance(publisher, RedisBulkPublisher) and publisher.shares(store.url):
        pipe = store.client.pipeline(transaction=True)
        publisher.push(pipe, outgoing)
        store.published(batch_id, upto_line, count, pipe)
        pipe.execute()
        return
    publisher.publish(outgoing)
    store.published(batch_id, upto_line, count)
