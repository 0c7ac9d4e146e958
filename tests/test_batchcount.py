"""Batch counters: each job in at most one state, counting idempotent, finished for good."""

from __future__ import annotations

import uuid

import redis

from producer.client import Counts
from producer.records import state_of
from worker.batchcount import BatchCounters
from worker.keys import Keys


def _batch(client: redis.Redis[bytes], keys: Keys, total: int) -> tuple[BatchCounters, str]:
    batch_id = uuid.uuid4().hex
    client.hset(keys.batch(batch_id), mapping={"total": total, "enqueued": 1})
    return BatchCounters(client, keys, 60), batch_id


def _counts(client: redis.Redis[bytes], keys: Keys, batch_id: str) -> Counts:
    raw = client.hgetall(keys.batch(batch_id))
    return Counts.from_facts({k.decode(): v.decode() for k, v in raw.items()})


def test_a_job_moves_between_waiting_and_retrying_and_is_counted_once(
        client: redis.Redis[bytes], keys: Keys) -> None:
    counters, batch_id = _batch(client, keys, 2)
    assert counters.waiting(batch_id, "a")
    assert counters.waiting(batch_id, "b")
    assert not counters.waiting(batch_id, "a")  # again: nothing changes
    assert _counts(client, keys, batch_id) == Counts(pending=0, waiting=2)
    assert counters.retrying(batch_id, "a")
    assert _counts(client, keys, batch_id) == Counts(retrying=1, waiting=1)
    assert counters.waiting(batch_id, "a")
    assert _counts(client, keys, batch_id) == Counts(waiting=2)


def test_a_finished_job_is_counted_once_and_never_moves_again(
        client: redis.Redis[bytes], keys: Keys) -> None:
    counters, batch_id = _batch(client, keys, 2)
    counters.retrying(batch_id, "a")
    counters.waiting(batch_id, "b")
    assert counters.finished(batch_id, "a", ok=True)
    assert counters.finished(batch_id, "b", ok=False)
    # A redelivery, a settle or a late retry of a finished job changes nothing.
    assert not counters.finished(batch_id, "a", ok=True)
    assert not counters.finished(batch_id, "a", ok=False)
    assert not counters.retrying(batch_id, "a")
    assert not counters.waiting(batch_id, "b")
    counts = _counts(client, keys, batch_id)
    assert counts == Counts(succeeded=1, failed=1)
    assert counts.finished


def test_counting_for_an_expired_batch_writes_nothing(client: redis.Redis[bytes], keys: Keys) -> None:
    counters = BatchCounters(client, keys, 60)
    assert not counters.finished("gone", "a", ok=True)
    assert not client.exists(keys.batch("gone"))


def test_stored_states_map_to_batch_states() -> None:
    assert state_of({"status": "RETRY", "result": {"exc_type": "RetryLater"}}) == "retrying"
    assert state_of({"status": "SUCCESS", "result": {}}) == "succeeded"
    assert state_of({"status": "REVOKED"}) == "failed"
    assert state_of(None) == "pending"


def test_counts_keep_waiting_apart_in_totals_and_json() -> None:
    counts = Counts.from_facts({"total": "10", "waiting": "3", "retrying": "2", "succeeded": "4"})
    assert (counts.pending, counts.waiting, counts.retrying) == (1, 3, 2)
    assert counts.total == 10
    assert not counts.finished
    assert counts.as_dict()["waiting"] == 3


def test_every_key_a_count_writes_expires(client: redis.Redis[bytes], keys: Keys) -> None:
    counters, batch_id = _batch(client, keys, 70)
    client.expire(keys.batch(batch_id), 60)
    for n in range(70):
        counters.waiting(batch_id, f"j{n}")
    counters.retrying(batch_id, "j0")
    for key in (keys.batch_waiting(batch_id), keys.batch_retrying(batch_id)):
        assert 0 < client.ttl(key) <= 60, key  # from the moment the set exists
    # A set that stays full through a long batch gets the expiry again as jobs finish.
    client.expire(keys.batch_waiting(batch_id), 5)
    client.expire(keys.batch_retrying(batch_id), 5)
    for n in range(1, 65):
        counters.finished(batch_id, f"j{n}", ok=True)
    for key in (keys.batch(batch_id), keys.batch_done(batch_id), keys.batch_waiting(batch_id),
                keys.batch_retrying(batch_id)):
        assert 5 < client.ttl(key) <= 60, key
    assert _counts(client, keys, batch_id) == Counts(succeeded=64, waiting=5, retrying=1)
