"""The producer's Python API: submit jobs, follow a batch, stream its results."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from producer.batches import BatchStore
from producer.celeryapp import make_app
from producer.records import decode_meta, record_of, state_of
from worker.jobs import TASK_NAME, Job, JobError, parse_job
from worker.keys import Keys
from worker.profiles import Profile, load_profiles
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
                "succeeded": self.succeeded, "failed": self.failed, "total": self.total}


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
        counts = {"pending": 0, "retrying": 0, "succeeded": 0, "failed": 0}
        for entries in self._store.entries(self.id):
            for raw in self._store.metas(e["id"] for e in entries):
                counts[state_of(decode_meta(raw))] += 1
        return Counts(**counts)

    def results(self, *, failed_only: bool = False) -> Iterator[dict[str, Any]]:
        """Each finished job's record, in enqueue order, a chunk at a time."""
        for entries in self._store.entries(self.id):
            metas = self._store.metas(e["id"] for e in entries)
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
            counts = self.status()
            if on_progress is not None:
                on_progress(counts)
            if counts.finished and self.facts.get("enqueued") == "1":
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
        backend = self.app.backend
        self.store = BatchStore(
            redis.Redis.from_url(settings.result_backend),
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
        self.store.finish(report.batch.id)
        return report

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
        ids = [str(uuid.uuid4()) for _ in jobs]
        entries = [
            {"id": job_id, "key": job.key, "line": line, "api": job.api, "method": job.method,
             "url": job.url}
            for job_id, (line, job) in zip(ids, jobs, strict=True)
        ]
        rejected = [{"line": r.line, "field": r.field, "message": r.message} for r in refused or []]
        self.store.add(batch_id, entries, rejected)
        if not jobs:
            return ids
        with self.app.producer_or_acquire() as publisher:
            for job_id, (_, job) in zip(ids, jobs, strict=True):
                self.app.send_task(
                    TASK_NAME,
                    kwargs={"job": job.to_message(), "batch_id": batch_id},
                    task_id=job_id,
                    producer=publisher,
                    kwargsrepr=json.dumps({"job": job.summary(), "batch_id": batch_id}),
                )
        return ids
