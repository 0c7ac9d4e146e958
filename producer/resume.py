"""Resuming an interrupted enqueue: which input lines the batch already has.

A resumed enqueue skips the lines published before, checking that each is the job
published from that line, and publishes the recorded jobs of a chunk whose
publication was cut short under the ids they were recorded with.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from producer.batches import BatchStore
from producer.bundling import packable
from producer.chunks import publish_noted
from producer.publish import Outgoing, Publisher
from worker.jobs import Job, JobError
from worker.profiles import Profile


class ResumeMismatch(JobError):
    """A resumed enqueue was given other input than the batch was enqueued from."""


class Earlier:
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


def seen_before(earlier: Earlier, batch_id: str, line: int, job: Job | None,
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


def publish_doubtful(store: BatchStore, publisher: Publisher, batch_id: str,
                     doubtful: list[tuple[dict[str, Any], Job]], upto_line: int,
                     profiles: Mapping[str, Profile] | None = None) -> int:
    """Publish the recorded jobs of the chunk an interrupted enqueue may not have published.

    They go out under the ids they were recorded with, unless one of them already has
    a result: then the chunk was published before the enqueue stopped.
    """
    running = [entry["id"] for entry, _ in doubtful if not entry.get("same_as")]
    outgoing = [] if any(meta is not None for meta in store.metas(running)) else [
        Outgoing(entry["id"], {"job": entry["job"], "batch_id": batch_id},
                 job.shown_arguments(batch_id),
                 packable=profiles is not None and packable(job, profiles))
        for entry, job in doubtful if not entry.get("same_as")]
    publish_noted(store, publisher, batch_id, outgoing, upto_line, len(doubtful))
    count = len(doubtful)
    doubtful.clear()
    return count
