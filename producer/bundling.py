"""Packing a chunk's jobs into bundles: several jobs in one task message.

Celery's own work for each message (receiving it, its events, its acknowledgement)
costs a worker more CPU than the request of a quick API, or of a slow one answered
concurrently. A bulk enqueue therefore packs consecutive jobs into one
``reqworker.bundle`` message, up to ``REQWORKER_JOBS_PER_MESSAGE`` (16) of them. Each
job keeps its own id, result, batch count and retries (``worker.bundles``).

Only jobs with nothing shared to wait for share a message. A job whose profile has a
rate limit, a concurrency cap or an adaptive rate waits for a budget the fleet shares,
and a POST or PATCH without ``retry_unsafe`` needs its own in-flight guard: they go
alone, one job a message, as ``send_task`` would send them. A chunk becomes at least
``MIN_MESSAGES`` messages, so a small batch still spreads over the fleet's threads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence

from producer.publish import Outgoing, random_uuids
from worker.inflight import guarded
from worker.jobs import BUNDLE_TASK_NAME, Job
from worker.profiles import Profile

#: The fewest messages a chunk of packable jobs is split into (when it has that many jobs).
MIN_MESSAGES = 32


def packable(job: Job, profiles: Mapping[str, Profile]) -> bool:
    """True when ``job`` may share a message: no shared budget to wait for, safe to send twice."""
    profile = profiles.get(job.api)
    return (profile is not None and profile.rate_limit is None and profile.concurrency is None
            and not profile.adaptive_rate and not guarded(job))


def bundle_size(count: int, per_message: int) -> int:
    """Jobs per bundle for ``count`` packable jobs: at most ``per_message``, at least
    ``MIN_MESSAGES`` messages in all when there are that many jobs."""
    return max(1, min(per_message, -(-count // MIN_MESSAGES)))


def pack(messages: Sequence[Outgoing], per_message: int) -> list[Outgoing]:
    """The messages to publish: the packable ones in bundles, the others as they are."""
    together = [m for m in messages if m.packable]
    size = bundle_size(len(together), per_message)
    if size <= 1:
        return list(messages)
    out = [m for m in messages if not m.packable]
    groups = [together[start:start + size] for start in range(0, len(together), size)]
    ids = iter(random_uuids(len(groups)))
    for group in groups:
        out.append(group[0] if len(group) == 1 else _bundle(next(ids), group))
    return out


def _bundle(bundle_id: str, group: Sequence[Outgoing]) -> Outgoing:
    batch_id = group[0].kwargs.get("batch_id")
    if any(m.kwargs.get("batch_id") != batch_id for m in group):
        raise ValueError("a bundle holds jobs of one batch")
    entries = b", ".join(
        b'{"id": %b, "job": %b}' % (json.dumps(m.task_id).encode(),
                                     m.job_json if m.job_json is not None
                                     else json.dumps(m.kwargs["job"]).encode())
        for m in group)
    kwargs_json = b'{"jobs": [%b], "batch_id": %b}' % (entries, json.dumps(batch_id).encode())
    kwargs = {"jobs": [{"id": m.task_id, "job": m.kwargs["job"]} for m in group], "batch_id": batch_id}
    return Outgoing(bundle_id, kwargs, shown_bundle(group, batch_id), kwargs_json,
                    task=BUNDLE_TASK_NAME)


def shown_bundle(group: Sequence[Outgoing], batch_id: str | None) -> str:
    """What Flower shows of a bundle: how many jobs, the first one's summary, every job id."""
    first = json.loads(group[0].kwargsrepr).get("job")
    return json.dumps({"jobs": len(group), "first": first, "ids": [m.task_id for m in group],
                       "batch_id": batch_id})


def job_ids(raw_messages: Iterable[bytes]) -> list[str]:
    """The job ids that task messages (as kombu's Redis transport stores them) carry: a
    job's task id, or each job id of a bundle."""
    ids: list[str] = []
    for raw in raw_messages:
        message = json.loads(raw)
        if message["headers"].get("task") != BUNDLE_TASK_NAME:
            ids.append(message["headers"]["id"])
            continue
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        ids.extend(entry["id"] for entry in kwargs["jobs"])
    return ids
