"""Bulk enqueue of a batch: record, publish and note each chunk, under a lease; resume one.

Each chunk of input lines is recorded in the batch, then published, then noted as
published up to its last line. While it runs, the enqueuing process keeps a short
lease on the batch; a batch whose enqueue neither finished nor holds the lease was
interrupted. A resumed enqueue skips the lines published before (checking that each
is the job published from that line), publishes the recorded jobs of a chunk whose
publication was cut short under the ids they were recorded with, and goes on from
there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from producer.batches import ENQUEUE_LEASE_S, BatchStore
from producer.publish import Outgoing, Publisher, RedisBulkPublisher
from worker.jobs import Job, JobError, parse_job
from worker.profiles import Profile

log = logging.getLogger("reqworker.enqueue")

#: Jobs recorded and published per step of a bulk submit.
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


@dataclass
class Tally:
    """What one enqueue run published and refused."""

    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)


class EnqueueBusy(RuntimeError):
    """Another live process is enqueuing this batch."""


class ResumeMismatch(JobError):
    """A resumed enqueue was given other input than the batch was enqueued from."""


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
    _publish_noted(store, publisher, batch_id, outgoing, upto_line, len(jobs))
    return ids


def _publish_noted(store: BatchStore, publisher: Publisher, batch_id: str,
                   outgoing: list[Outgoing], upto_line: int | None, count: int) -> None:
    """Publish, then note the input lines published.

    On a Redis broker that is also the batch's Redis (the default), both are one
    transaction, so an enqueue killed in between leaves no chunk in doubt.
    """
    if isinstance(publisher, RedisBulkPublisher) and publisher.shares(store.client):
        pipe = store.client.pipeline(transaction=True)
        publisher.push(pipe, outgoing)
        store.published(batch_id, upto_line, count, pipe)
        pipe.execute()
        return
    publisher.publish(outgoing)
    store.published(batch_id, upto_line, count)


class _Earlier:
    """The jobs an earlier enqueue of the batch recorded, walked in line order."""

    def __init__(self, store: BatchStore, batch_id: str) -> None:
        facts = store.facts(batch_id)
        self.published_line = int(facts.get("published_line") or 0)
        self.recorded_line = int(facts.get("recorded_line") or 0)
        self._entries: Iterator[dict[str, Any]] = (
            e for chunk in store.entries(batch_id) for e in chunk if e.get("line") is not None)
        self._next: dict[str, Any] | None = next(self._entries, None)

    def entry(self, line: int) -> dict[str, Any] | None:
        """The job recorded from input ``line``, if one was (refused lines have none)."""
        while self._next is not None and self._next["line"] < line:
            self._next = next(self._entries, None)
        if self._next is not None and self._next["line"] == line:
            return self._next
        return None


def _same_job(entry: dict[str, Any], job: Job) -> bool:
    return json.dumps(entry["job"], sort_keys=True) == json.dumps(job.to_message(), sort_keys=True)


class _Heartbeat:
    """Refreshes the enqueue's lease on the batch from a thread until stopped."""

    def __init__(self, store: BatchStore, batch_id: str) -> None:
        self._store = store
        self._batch_id = batch_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="enqueue-lease")

    def _beat(self) -> None:
        while not self._stop.wait(ENQUEUE_LEASE_S / 3):
            try:
                self._store.hold_lease(self._batch_id)
            except redis.RedisError as exc:  # the enqueue itself will fail and say why
                log.warning("could not refresh the enqueue lease of %s: %s", self._batch_id, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class _Run:
    """One enqueue run: takes numbered inputs, and publishes them a chunk at a time."""

    def __init__(self, store: BatchStore, publisher: Publisher, profiles: Mapping[str, Profile],
                 batch_id: str, earlier: _Earlier | None,
                 on_progress: Callable[[int, int], None] | None) -> None:
        self.store, self.publisher, self.profiles = store, publisher, profiles
        self.batch_id, self.earlier, self.on_progress = batch_id, earlier, on_progress
        #: Input lines up to here were recorded before (only when resuming).
        self.recorded_line = earlier.recorded_line if earlier is not None else 0
        self.tally = Tally()
        self.chunk: list[tuple[int | None, Job]] = []
        self.refused: list[Rejected] = []
        self.doubtful: list[tuple[dict[str, Any], Job]] = []
        self.last_line: int | None = None

    def take(self, line: int, raw: Any) -> None:
        if self.doubtful and line > self.recorded_line:
            self.publish_doubtful()
        self.last_line = line
        job: Job | None = None
        try:
            if isinstance(raw, JobError):
                raise raw
            job = parse_job(raw, self.profiles)
        except JobError as exc:
            if line > self.recorded_line:
                self.refused.append(Rejected(line, exc.field, exc.message))
        if self.earlier is not None and line <= self.recorded_line:
            _seen_before(self.earlier, self.batch_id, line, job, self.doubtful)
            return
        if job is not None:
            self.chunk.append((line, job))
        if len(self.chunk) + len(self.refused) >= PUBLISH_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.doubtful:
            self.publish_doubtful()
        publish_chunk(self.store, self.publisher, self.batch_id, self.chunk, self.refused,
                      self.last_line)
        self.tally.accepted += len(self.chunk)
        self.tally.rejected.extend(self.refused)
        if self.on_progress is not None:
            self.on_progress(self.tally.accepted, len(self.tally.rejected))
        self.chunk.clear()
        self.refused.clear()

    def publish_doubtful(self) -> None:
        self.tally.accepted += _publish_doubtful(self.store, self.publisher, self.batch_id,
                                                 self.doubtful, self.recorded_line)


def enqueue(
    store: BatchStore,
    publisher: Publisher,
    profiles: Mapping[str, Profile],
    batch_id: str,
    items: Iterable[tuple[int, Any]],
    *,
    resume: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Tally:
    """Enqueue numbered inputs (a ``JobError`` item is refused) into ``batch_id``.

    With ``resume`` the batch was enqueued before: lines already published are skipped.
    """
    if resume and not store.take_lease(batch_id):
        raise EnqueueBusy(f"batch {batch_id} is still being enqueued by a live process "
                          f"(its lease lapses {ENQUEUE_LEASE_S} s after that process stops)")
    run = _Run(store, publisher, profiles, batch_id,
               _Earlier(store, batch_id) if resume else None, on_progress)
    ended = False
    with _Heartbeat(store, batch_id):
        try:
            for line, raw in items:
                run.take(line, raw)
            run.flush()
            store.finish(batch_id)
            ended = True
        except ResumeMismatch:
            raise  # nothing of it was published: the batch stays as it was, resumable
        except Exception as exc:
            # A handled error (bad input, Redis gone): what was published can still finish,
            # and the batch says where and why its enqueue stopped.
            why = f"{type(exc).__name__}: {exc}"
            _best_effort(lambda: store.finish(batch_id, stopped=why))
            ended = True
            raise
        finally:
            if not ended:  # stopped from outside (Ctrl-C), or a mismatch: resumable at once
                _best_effort(lambda: store.drop_lease(batch_id))
    return run.tally


def _seen_before(earlier: _Earlier, batch_id: str, line: int, job: Job | None,
                 doubtful: list[tuple[dict[str, Any], Job]]) -> None:
    """Check a line an earlier enqueue recorded; keep it if its publication is in doubt."""
    entry = earlier.entry(line)
    if entry is None:
        return  # refused (or blank) then; nothing of it is in the batch
    if job is None or not _same_job(entry, job):
        raise ResumeMismatch("", f"line {line} is not the job the earlier enqueue of batch "
                             f"{batch_id} published from it: resume with the same input")
    if line > earlier.published_line:
        doubtful.append((entry, job))


def _publish_doubtful(store: BatchStore, publisher: Publisher, batch_id: str,
                      doubtful: list[tuple[dict[str, Any], Job]], upto_line: int) -> int:
    """Publish the recorded jobs of the chunk an interrupted enqueue may not have published.

    They go out under the ids they were recorded with, unless one of them already has
    a result: then the chunk was published before the enqueue stopped.
    """
    running = [entry["id"] for entry, _ in doubtful if not entry.get("same_as")]
    outgoing = [] if any(meta is not None for meta in store.metas(running)) else [
        Outgoing(entry["id"], {"job": entry["job"], "batch_id": batch_id},
                 job.shown_arguments(batch_id))
        for entry, job in doubtful if not entry.get("same_as")]
    _publish_noted(store, publisher, batch_id, outgoing, upto_line, len(doubtful))
    count = len(doubtful)
    doubtful.clear()
    return count


def _best_effort(step: Callable[[], None]) -> None:
    try:
        step()
    except redis.RedisError as exc:
        log.warning("could not record how the enqueue ended: %s", exc)
