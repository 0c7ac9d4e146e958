"""Bringing a batch's counters back in line with its stored results.

Workers count a job when they store its result. A count can still go missing (a
worker killed between the two, with no redelivery), so whoever follows a batch whose
counters stall checks the stored results (``settle``), and ``reqworker recount``
rebuilds the counters from them (``recount``).
"""

from __future__ import annotations

from collections.abc import Iterator

from producer.batches import BatchStore
from producer.records import decode_meta, state_of
from worker.batchcount import FAILED, RETRYING, SUCCEEDED, WAITING

FINISHED = (SUCCEEDED, FAILED)


def _states(store: BatchStore, batch_id: str, only_uncounted: bool) -> Iterator[tuple[str, str]]:
    """(job id, state by its stored result) of each job the batch runs itself, chunk by chunk."""
    done_key = store.keys.batch_done(batch_id)
    for entries in store.entries(batch_id):
        ids = [e["id"] for e in entries if not e.get("same_as")]
        if only_uncounted and ids:
            counted = store.client.smismember(done_key, ids)
            ids = [job_id for job_id, seen in zip(ids, counted, strict=True) if not seen]
        for job_id, raw in zip(ids, store.metas(ids), strict=True):
            yield job_id, state_of(decode_meta(raw))


def settle(store: BatchStore, batch_id: str) -> int:
    """Count every finished job the counters missed; returns how many that was.

    Reads only the results of jobs not counted as finished, and counts each once
    (counting is idempotent), so it is safe while workers run.
    """
    counters = store.counters()
    pipe = store.client.pipeline(transaction=False)
    for job_id, state in _states(store, batch_id, only_uncounted=True):
        if state in FINISHED:
            counters.count(batch_id, job_id, state, client=pipe)
    return sum(1 for changed in pipe.execute() if changed)


def recount(store: BatchStore, batch_id: str) -> None:
    """Rebuild the batch's counters from its stored results.

    Finished and retrying jobs are counted from their stored state; a job counted as
    waiting (a wait stores none) stays waiting unless its result says it finished.
    """
    store.facts(batch_id)  # BatchNotFound before anything is written
    # A wait stores no state: a job the counters hold as waiting stays so unless finished.
    waiting = {raw.decode() for raw in store.client.smembers(store.keys.batch_waiting(batch_id))}
    members: dict[str, list[str]] = {SUCCEEDED: [], FAILED: [], RETRYING: [], WAITING: []}
    for job_id, state in _states(store, batch_id, only_uncounted=False):
        if state not in FINISHED and job_id in waiting:
            state = WAITING
        if state in members:
            members[state].append(job_id)
    keys = store.keys
    sets = {SUCCEEDED: keys.batch_done(batch_id), FAILED: keys.batch_done(batch_id),
            RETRYING: keys.batch_retrying(batch_id), WAITING: keys.batch_waiting(batch_id)}
    pipe = store.client.pipeline(transaction=True)
    pipe.delete(*set(sets.values()))
    for state, ids in members.items():
        for start in range(0, len(ids), 1000):
            pipe.sadd(sets[state], *ids[start:start + 1000])
        pipe.hset(keys.batch(batch_id), state, len(ids))
    for key in set(sets.values()):
        pipe.expire(key, store.ttl_s)
    pipe.execute()
    # Jobs that finished while the results were read are counted now.
    settle(store, batch_id)
