"""The producer's Python API: submit jobs, follow a batch, stream its results."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from producer.batches import BatchStore, Enqueuing
from producer.celeryapp import make_app
from producer.chunks import Rejected, publish_chunk
from producer.enqueue import enqueue
from producer.publish import make_publisher
from producer.records import decode_meta, record_of
from producer.recount import recount, settle
from worker.jobs import parse_job
from worker.keys import Keys
from worker.profiles import Profile, load_profiles
from worker.redisconn import command_client
from worker.settings import Settings

#: Seconds a batch's counts may stand still before a follower checks the stored results
#: for a finished job the counters missed; the wait doubles after each check, up to
#: ``SETTLE_MAX_S``.
SETTLE_AFTER_S = 5.0
SETTLE_MAX_S = 120.0
#: A check reads the whole job list of the batch, so it is made only once no more than
#: this many jobs are left: a missing count blocks a batch at its end, not before.
SETTLE_OPEN_MAX = 1000


@dataclass(frozen=True)
class Counts:
    """How many of a batch's jobs are in each state.

    *waiting* jobs wait for pacing (the rate budget, a concurrency slot, a pause);
    *retrying* jobs wait for a backoff countdown after a failure.
    """

    pending: int = 0
    retrying: int = 0
    succeeded: int = 0
    failed: int = 0
    #: Jobs that repeated an earlier GET of the batch, answered by its result.
    duplicates: int = 0
    waiting: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.waiting + self.retrying + self.succeeded + self.failed

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.waiting == 0 and self.retrying == 0

    def as_dict(self) -> dict[str, int]:
        return {"pending": self.pending, "waiting": self.waiting, "retrying": self.retrying,
                "succeeded": self.succeeded, "failed": self.failed, "total": self.total,
                "duplicates": self.duplicates}

    @classmethod
    def from_facts(cls, facts: Mapping[str, str]) -> Counts:
        """Counts from the counters workers keep in the batch's record."""
        def num(name: str) -> int:
            return max(int(facts.get(name) or 0), 0)

        succeeded, failed, retrying = num("succeeded"), num("failed"), num("retrying")
        waiting = num("waiting")
        pending = max(num("total") - succeeded - failed - retrying - waiting, 0)
        return cls(pending, retrying, succeeded, failed, num("duplicates"), waiting)


class EnqueueInterrupted(RuntimeError):
    """The batch's enqueue stopped before publishing all its input, and nothing resumes it."""

    def __init__(self, batch_id: str, enqueuing: Enqueuing, counts: Counts) -> None:
        super().__init__(f"batch {batch_id}: {enqueuing.describe(batch_id)}")
        self.enqueuing = enqueuing
        self.counts = counts


class _Stall:
    """Says when counts that stand still are worth checking against the stored results."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._wait_s = after_s
        self._last: Counts | None = None
        self._since = time.monotonic()

    def due(self, counts: Counts) -> bool:
        now = time.monotonic()
        if counts != self._last:
            self._last, self._since, self._wait_s = counts, now, self.after_s
            return False
        if now - self._since < self._wait_s:
            return False
        self._since, self._wait_s = now, min(self._wait_s * 2, SETTLE_MAX_S)
        return True


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

    def enqueuing(self) -> Enqueuing:
        """How far the batch's enqueue got: done, still going, or interrupted at a line."""
        return self._store.enqueuing(self.id, self.facts)

    def settle(self) -> int:
        """Count the finished jobs the counters missed; returns how many (see ``recount``)."""
        return settle(self._store, self.id)

    def recount(self) -> Counts:
        """Rebuild the batch's counters from its stored results; returns the new counts."""
        recount(self._store, self.id)
        return self.status()

    def wait(
        self,
        *,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_progress: Callable[[Counts], None] | None = None,
        settle_after_s: float = SETTLE_AFTER_S,
    ) -> Counts:
        """Block until no job is pending, waiting or retrying; returns the final counts.

        Counts that stand still for ``settle_after_s`` are checked against the stored
        results, so a count a crashed worker never made cannot block this for good.
        Raises ``EnqueueInterrupted`` when the batch's enqueue died before the end.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stall = _Stall(settle_after_s)
        while True:
            facts = self.facts
            counts = Counts.from_facts(facts)
            if on_progress is not None:
                on_progress(counts)
            enqueuing = self._store.enqueuing(self.id, facts)
            if enqueuing.interrupted:
                raise EnqueueInterrupted(self.id, enqueuing, counts)
            if counts.finished and enqueuing.done:
                return counts
            if counts.total - counts.done <= SETTLE_OPEN_MAX and stall.due(counts):
                self.settle()
                continue
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
            settings.result_backend,
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
        job_id = publish_chunk(self.store, self.publisher, batch_id, [(None, parsed)])[0]
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
        batch = Batch(self.store, self._new_batch(name))
        tally = enqueue(self.store, self.publisher, self.profiles, batch.id, items,
                        on_progress=on_progress)
        return SubmitReport(batch, tally.accepted, tally.rejected)

    def resume(
        self,
        batch_id: str,
        items: Iterable[tuple[int, Any]],
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> SubmitReport:
        """Go on with an enqueue that stopped: publish only the lines not yet published.

        ``items`` is the same numbered input again. A line already published must be
        the same job (else ``JobError``); raises ``EnqueueBusy`` while another process
        still enqueues the batch.
        """
        batch = self.batch(batch_id)
        tally = enqueue(self.store, self.publisher, self.profiles, batch.id, items, resume=True,
                        on_progress=on_progress)
        return SubmitReport(batch, tally.accepted, tally.rejected)

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
