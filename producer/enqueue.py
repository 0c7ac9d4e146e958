"""Bulk enqueue of a batch, a chunk at a time, under a lease; and resuming one.

Each chunk of input lines is recorded in the batch, then published, then noted as
published up to its last line (``producer.chunks``). While it runs, the enqueuing
process keeps a short lease on the batch; a batch whose enqueue neither finished nor
holds the lease was interrupted, and can be resumed (``producer.resume``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from producer.batches import ENQUEUE_LEASE_S, BatchStore
from producer.chunks import PUBLISH_CHUNK, Rejected, publish_chunk
from producer.publish import Publisher
from producer.resume import Earlier, ResumeMismatch, publish_doubtful, seen_before
from worker.jobs import Job, JobError, parse_job
from worker.profiles import Profile

log = logging.getLogger("reqworker.enqueue")


@dataclass
class Tally:
    """What one enqueue run published and refused."""

    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)


class EnqueueBusy(RuntimeError):
    """Another live process is enqueuing this batch."""


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
                 batch_id: str, earlier: Earlier | None,
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
            seen_before(self.earlier, self.batch_id, line, job, self.doubtful)
            return
        if job is not None:
            self.chunk.append((line, job))
        if len(self.chunk) + len(self.refused) >= PUBLISH_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.doubtful:
            self.publish_doubtful()
        publish_chunk(self.store, self.publisher, self.batch_id, self.chunk, self.refused,
                      self.last_line, self.profiles)
        self.tally.accepted += len(self.chunk)
        self.tally.rejected.extend(self.refused)
        if self.on_progress is not None:
            self.on_progress(self.tally.accepted, len(self.tally.rejected))
        self.chunk.clear()
        self.refused.clear()

    def publish_doubtful(self) -> None:
        self.tally.accepted += publish_doubtful(self.store, self.publisher, self.batch_id,
                                                self.doubtful, self.recorded_line, self.profiles)


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
               Earlier(store, batch_id) if resume else None, on_progress)
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


def _best_effort(step: Callable[[], None]) -> None:
    try:
        step()
    except redis.RedisError as exc:
        log.warning("could not record how the enqueue ended: %s", exc)
