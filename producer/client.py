"""The producer's Python API: submit jobs, follow a batch, stream its results."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from producer.batches import BatchStore
from producer.celeryapp import make_app
from producer.publish import Outgoing, make_publisher
from producer.records import decode_meta, record_of
from worker.jobs import Job, JobError, parse_job
from worker.keys import Keys
from worker.profiles import Profile, load_profiles
from worker.redisconn import command_client
from worker.settings import Settings

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


@dataclass(frozen=True)
class Counts:
    """How many of a batch's jobs are in each state."""

    pending: int = 0
    retrying: int = 0
    succeeded: int = 0
    failed: int = 0
    #: Jobs that repeated an earlier GET of the batch, answered by its result.
    duplicates: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.retrying + self.succeeded + self.failed

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.retrying == 0

    def as_dict(self) -> dict[str, int]:
        return {"pending": self.pending, "retrying": self.retrying,
                "succeeded": self.succeeded, "failed": self.failed, "total": self.total,
                "duplicates": self.duplicates}

    @classmethod
    def from_facts(cls, facts: Mapping[str, str]) -> Counts:
        """Counts from the counters workers keep in the batch's record."""
        def num(name: str) -> int:
            return max(int(facts.get(name) or 0), 0)

        succeeded, failed, retrying = num("succeeded"), num("failed"), num("retrying")
        pending = max(num("total") - succeeded - failed - retrying, 0)
        return cls(pending, retrying, succeeded, failed, num("duplicates"))


def batch_state(facts: Mapping[str, str], counts: Counts) -> str:
    """``enqueuing`` while jobs are still being added, then ``running``, then ``finished``."""
    if facts.get("enqueued") != "1":
        return "enqueuing"
    return "finished" if counts.finished else "running"


@dataclass(frozen=True)
class BatchSummary:
    """One line of ``reqworker batches``: a batch's id, name, creation time, state and counts."""

    batch_id: str
    name: str
    created_s: float
    state: str
    counts: Counts
    refused: int

    @classmethod
    def from_facts(cls, batch_id: str, facts: Mapping[str, str]) -> BatchSummary:
        counts = Counts.from_facts(facts)
        return cls(batch_id, facts.get("name", ""), float(facts.get("created") or 0),
                   batch_state(facts, counts), counts, int(facts.get("rejected") or 0))

    def created_text(self) -> str:
        return datetime.fromtimestamp(self.created_s, UTC).strftime("%Y-%m-%d %H:%M:%S")

    def as_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "name": self.name or None,
                "created": datetime.fromtimestamp(self.created_s, UTC).isoformat(timespec="seconds"),
                "state": self.state, **self.counts.as_dict(), "refused": self.refused}


class Batch:
    """A handle on a batch of jobs: its progress and its results, from any machine."""

    def __init__(self, store: BatchStore, batch_id: str) -> None:
        self._store = store
        self.id = batch_id

    @property
    def facts(self) -> dict[str, str]:
        return self._store.facts(self.id)

    def rejected(self) -> list[Rejected]:
        return [Rejected(r.get("line"), r.get("field", ""), r.get("message", ""))
                for r in self._store.rejected(self.id)]

    def status(self) -> Counts:
        """Counts by state, from the counters workers keep (one read, whatever the size)."""
        return Counts.from_facts(self.facts)

    def results(self, *, failed_only: bool = False) -> Iterator[dict[str, Any]]:
        """Each finished job's record, in enqueue order, a chunk at a time.

        A duplicate GET yields the result of the job that ran it, under its own key.
        """
        for entries in self._store.entries(self.id):
            metas = self._store.metas(e.get("same_as") or e["id"] for e in entries)
            for entry, raw in zip(entries, metas, strict=True):
                record = record_of(entry, self.id, decode_meta(raw))
                if record is not None and not (failed_only and record.get("ok")):
                    yield record

    def wait(
        self,
        *,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_progress: Callable[[Counts], None] | None = None,
    ) -> Counts:
        """Block until no job is pending or retrying; returns the final counts."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            facts = self.facts
            counts = Counts.from_facts(facts)
            if on_progress is not None:
                on_progress(counts)
            if counts.finished and facts.get("enqueued") == "1":
                return counts
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {self.id} still has {counts.total - counts.done} jobs "
                                   f"to finish after {timeout_s:g} s")
            time.sleep(poll_s)


@dataclass
class SubmitReport:
    """What a bulk submit did: the batch, how many jobs it took, which inputs it refused."""

    batch: Batch
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)


class Client:
    """Enqueues jobs for the workers and reads batches back."""

    def __init__(
        self,
        settings: Settings,
        profiles: Mapping[str, Profile],
        app: Celery | None = None,
    ) -> None:
        self.settings = settings
        self.profiles = profiles
        self.app = app or make_app(settings)
        self.publisher = make_publisher(self.app, settings)
        backend = self.app.backend
        self.store = BatchStore(
            command_client(settings.result_backend, settings),
            Keys(settings.key_prefix),
            settings.result_expires_s,
            backend.get_key_for_task,
        )

    @classmethod
    def from_env(cls) -> Client:
        settings = Settings.from_env()
        return cls(settings, load_profiles(settings.apis_path, with_secrets=False))

    def batch(self, batch_id: str) -> Batch:
        """A handle on an existing batch; raises ``BatchNotFound``."""
        self.store.facts(batch_id)
        return Batch(self.store, batch_id)

    def recent_batches(self, limit: int) -> list[BatchSummary]:
        """The ``limit`` most recent batches still kept, newest first."""
        return [BatchSummary.from_facts(batch_id, facts) for batch_id, facts in self.store.recent(limit)]

    def submit(self, job: Mapping[str, Any], *, name: str | None = None) -> tuple[Batch, str]:
        """Enqueue one job as a batch of its own; returns the batch and the job id."""
        parsed = parse_job(job, self.profiles)
        batch_id = self._new_batch(name)
        job_id = self._publish(batch_id, [(None, parsed)])[0]
        self.store.finish(batch_id)
        return Batch(self.store, batch_id), job_id

    def submit_many(
        self,
        jobs: Iterable[Any],
        *,
        name: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> SubmitReport:
        """Enqueue an iterable of jobs (dicts) as one batch, refusing the bad ones."""
        return self.submit_numbered(enumerate(jobs, start=1), name=name, on_progress=on_progress)

    def submit_numbered(
        self,
        items: Iterable[tuple[int, Any]],
        *,
        name: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> SubmitReport:
        """Like ``submit_many`` with the line numbers given (a ``JobError`` item is refused)."""
        report = SubmitReport(Batch(self.store, self._new_batch(name)))
        chunk: list[tuple[int | None, Job]] = []
        refused: list[Rejected] = []

        def flush() -> None:
            self._publish(report.batch.id, chunk, refused)
            report.accepted += len(chunk)
            report.rejected.extend(refused)
            if on_progress is not None:
                on_progress(report.accepted, len(report.rejected))
            chunk.clear()
            refused.clear()

        try:
            for line, raw in items:
                try:
                    if isinstance(raw, JobError):
                        raise raw
                    chunk.append((line, parse_job(raw, self.profiles)))
                except JobError as exc:
                    refused.append(Rejected(line, exc.field, exc.message))
                if len(chunk) + len(refused) >= PUBLISH_CHUNK:
                    flush()
            flush()
        finally:
            # Whatever stopped the input, the batch is marked enqueued, so watch and status end.
            self.store.finish(report.batch.id)
        return report

    def retry_failed(self, batch_id: str, *, name: str | None = None) -> SubmitReport:
        """Enqueue a batch's failed jobs again, as a new batch."""
        old = self.batch(batch_id)
        failed = {r["job_id"] for r in old.results(failed_only=True)}

        def jobs() -> Iterator[tuple[int, Any]]:
            for entries in self.store.entries(batch_id):
                for entry in entries:
                    # a repeated GET goes again too: the new batch answers it once more
                    if (entry.get("same_as") or entry["id"]) in failed:
                        yield entry.get("line") or 0, entry["job"]

        title = name or f"retry of {old.facts.get('name') or batch_id}"
        return self.submit_numbered(jobs(), name=title)

    def _new_batch(self, name: str | None) -> str:
        batch_id = uuid.uuid4().hex
        self.store.create(batch_id, name)
        return batch_id

    def _publish(
        self,
        batch_id: str,
        jobs: list[tuple[int | None, Job]],
        refused: list[Rejected] | None = None,
    ) -> list[str]:
        """Record then publish one chunk; a GET repeated in the batch is recorded, not run."""
        ids = [str(uuid.uuid4()) for _ in jobs]
        gets = [(i, fingerprint(job)) for i, (_, job) in enumerate(jobs) if job.method == "GET"]
        first = self.store.claim(batch_id, [(fp, ids[i]) for i, fp in gets])
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
        self.store.add(batch_id, entries, rejected)
        self.publisher.publish(outgoing)
        return ids


def fingerprint(job: Job) -> str:
    """What makes two GETs the same request: profile, URL, params, headers, cache settings."""
    same = {"api": job.api, "url": job.url, "params": job.params, "headers": job.headers,
            "cache": job.cache, "refresh": job.refresh, "paginate": job.paginate, "page": job.page}
    return hashlib.blake2b(json.dumps(same, sort_keys=True).encode(), digest_size=16).hexdigest()
