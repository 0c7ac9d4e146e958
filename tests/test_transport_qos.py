"""The transport's QoS: a message taken off its queue is recorded as held even across a failover."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from worker.transport import ParkingQoS


class FlakyRedis:
    """The suite's Redis, unreachable for the first ``failures`` pipelines (a failover)."""

    def __init__(self, real: redis.Redis[bytes], failures: int) -> None:
        self.real = real
        self.failures = failures

    def pipeline(self) -> Any:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("Error 111 connecting: Connection refused.")
        return self.real.pipeline()


def qos_over(client: Any, queue: str) -> ParkingQoS:
    @contextlib.contextmanager
    def conn_or_acquire(given: Any = None) -> Iterator[Any]:
        yield given or client

    channel = SimpleNamespace(conn_or_acquire=conn_or_acquire, unacked_key=f"{queue}:unacked",
                              unacked_index_key=f"{queue}:unacked_index")
    qos = ParkingQoS(channel)
    qos.restore_at_shutdown = False
    return qos


def message(tag: str) -> Any:
    return SimpleNamespace(delivery_info={"exchange": "", "routing_key": "q"}, _raw={"tag": tag})


def test_a_taken_message_is_recorded_as_held_once_redis_answers_again(client: redis.Redis[bytes]) -> None:
    queue, tag = f"q-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    qos = qos_over(FlakyRedis(client, failures=2), queue)
    qos.append(message(tag), tag)
    assert client.hexists(f"{queue}:unacked", tag)
    assert client.zscore(f"{queue}:unacked_index", tag) is not None
    assert tag in qos._delivered


def test_a_redis_that_never_comes_back_still_fails_the_append(client: redis.Redis[bytes],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.transport.APPEND_RETRY_S", 0.5)
    queue, tag = f"q-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    qos = qos_over(FlakyRedis(client, failures=1000), queue)
    with pytest.raises(redis.ConnectionError, match="Connection refused"):
        qos.append(message(tag), tag)
    assert tag not in qos._delivered
