"""Parking delayed messages in Redis and moving them when due (the suite's private redis-server)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from worker.deadletters import poison_reason
from worker.parking import Parking, delay_ms, parked_key


def message(eta: datetime | None = None) -> dict[str, object]:
    headers = {"task": "reqworker.request", "id": str(uuid.uuid4())}
    if eta is not None:
        headers["eta"] = eta.isoformat()
    return {"headers": headers, "properties": {"delivery_tag": str(uuid.uuid4())}, "body": ""}


def test_the_delay_comes_from_celerys_eta_header() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert delay_ms(message(now + timedelta(seconds=2.5)), now) == 2500
    assert delay_ms(message(now - timedelta(seconds=1)), now) == 0
    assert delay_ms(message(None), now) == 0
    broken = message(None)
    broken["headers"]["eta"] = "tomorrow-ish"  # type: ignore[index]
    assert delay_ms(broken, now) == 0  # goes to its queue, where Celery reports it


def server_ms(client: redis.Redis[bytes]) -> int:
    """The Redis server's clock in whole milliseconds, as the parking scripts read it."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_parked_message_moves_onto_its_queue_only_when_due(client: redis.Redis[bytes]) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    parking = Parking(client)
    due_ms = parking.park(queue, json.dumps({"n": 1}), 60_000)
    parking.park(queue, json.dumps({"n": 2}), 0)
    before_ms = server_ms(client)
    moved, next_s = parking.move_due([queue])
    after_ms = server_ms(client)
    assert moved == 1
    assert [json.loads(m) for m in client.lrange(queue, 0, -1)] == [{"n": 2}]
    # Exactly the parked message's due time, as the server's clock read it during the call.
    assert next_s is not None
    assert (due_ms - after_ms) / 1000 <= next_s <= (due_ms - before_ms) / 1000
    assert parking.count(queue) == 1
    assert client.zcard(parked_key(queue)) == 1


def test_due_messages_go_to_the_front_of_their_queue_earliest_first(client: redis.Redis[bytes]) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    client.lpush(queue, json.dumps({"n": "fresh"}))  # kombu publishes with LPUSH, takes from the right
    parking = Parking(client)
    client.zadd(parked_key(queue), {f"{queue}\n" + json.dumps({"n": n}): due  # all due long ago
                                    for n, due in ((2, 30), (0, 10), (1, 20))})
    assert parking.move_due([queue]) == (3, None)
    taken = [json.loads(client.rpop(queue) or b"null")["n"] for _ in range(4)]
    assert taken == [0, 1, 2, "fresh"]


def test_a_held_message_is_parked_again_and_acknowledged_in_one_step(client: redis.Redis[bytes]) -> None:
    queue, tag = f"q-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    index, unacked = f"{queue}:unacked_index", f"{queue}:unacked"
    client.zadd(index, {tag: 1.0})
    client.hset(unacked, tag, "held")
    parking = Parking(client)
    due = parking.repark(queue, json.dumps({"n": 1}), 60_000, (index, unacked, tag))
    assert due is not None
    assert client.zscore(parked_key(queue), f"{queue}\n" + json.dumps({"n": 1})) == due
    assert client.zcard(index) == 0
    assert client.hlen(unacked) == 0
    # Held no longer (its lease ran out and it went back to its queue): nothing is parked.
    assert parking.repark(queue, json.dumps({"n": 2}), 0, (index, unacked, tag)) is None
    assert parking.count(queue) == 1


def test_many_movers_at_once_move_each_message_exactly_once(client: redis.Redis[bytes]) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    parking = Parking(client)
    for n in range(1000):
        parking.park(queue, json.dumps({"n": n}), 0)
    totals: list[int] = []

    def mover() -> None:
        mine = Parking(redis.Redis(connection_pool=client.connection_pool))
        moved = 0
        while True:
            count, next_s = mine.move_due([queue])
            moved += count
            if next_s is None:
                break
        totals.append(moved)

    threads = [threading.Thread(target=mover) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(totals) == 1000
    assert sorted(json.loads(m)["n"] for m in client.lrange(queue, 0, -1)) == list(range(1000))
    assert client.zcard(parked_key(queue)) == 0


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xff\xfe", "not UTF-8"),
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON list, not an object"),
    (b'{"headers": {}, "properties": {}}', "no headers, properties and body"),
    (json.dumps({"headers": {"task": "x"}, "properties": {}, "body": ""}).encode(), "not a reqworker job"),
    (json.dumps({"headers": {"task": "reqworker.request"}, "properties": {"body_encoding": "base64"},
                 "body": "***"}).encode(), "not base64"),
])
def test_poison_is_named_for_what_is_wrong_with_it(raw: bytes, reason: str) -> None:
    message_, problem = poison_reason(raw)
    assert message_ is None
    assert problem is not None
    assert reason in problem


def test_a_control_reply_needs_only_a_readable_envelope() -> None:
    raw = json.dumps({"headers": {}, "properties": {}, "body": "e30="}).encode()
    assert poison_reason(raw, job=False) == (json.loads(raw), None)
    assert poison_reason(b"[]", job=False)[1] is not None
