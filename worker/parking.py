"""Delayed messages wait in Redis, not in a worker: a sorted set per queue, keyed by due time.

A message published with an ETA in the future is *parked*: added to the sorted set
``<queue list>:delayed`` with its due time (the Redis server's clock, in ms) as its
score. Every worker runs ``move_due`` on a timer: one Lua script that moves each due
message onto its queue list, atomically, so any number of workers on any number of
hosts may run it at once and each message is moved exactly once.

Members are ``<target list>\\n<message JSON>``: kombu messages carry a unique delivery
tag, so two parked messages never collide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from worker.lua import script

#: Suffix of the sorted set that holds a queue list's parked messages.
PARKED_SUFFIX = ":delayed"
#: Most messages one ``move_due`` call reads (and moves, when due) from one sorted set.
MOVE_LIMIT = 100
#: A message due within this many ms is published at once instead of parked.
PARK_MIN_MS = 1


def parked_key(queue_list: str) -> str:
    """The sorted set of a queue list's parked messages."""
    return queue_list + PARKED_SUFFIX


def delay_ms(message: dict[str, Any], now: datetime | None = None) -> int:
    """Milliseconds until a kombu message's ETA (Celery's ``eta`` header); 0 without one.

    An ETA that cannot be read is treated as none: the message goes to its queue and
    Celery reports it there, rather than waiting in Redis for ever.
    """
    headers = message.get("headers")
    eta = headers.get("eta") if isinstance(headers, dict) else None
    if not isinstance(eta, str) or not eta:
        return 0
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds) or seconds <= 0:
        return 0
    return math.ceil(seconds * 1000)


class Parking:
    """Parks and moves delayed messages on one Redis server."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client
        self._park = script(client, "parking_park.lua")
        self._move = script(client, "parking_move.lua")
        self._repark = script(client, "parking_repark.lua")

    def park(self, queue_list: str, payload: str, delay: int) -> int:
        """Hold ``payload`` for ``delay`` ms, then put it on ``queue_list``; returns its due time."""
        return int(self._park(keys=[parked_key(queue_list)], args=[delay, queue_list, payload]))

    def repark(self, queue_list: str, payload: str, delay: int, held: tuple[str, str, str]) -> int | None:
        """Park ``payload`` in place of a held message, acknowledging that one in the same step.

        ``held``: kombu's unacked index and hash, and the held message's delivery tag.
        Returns the due time, or None when that message was no longer held (nothing parked).
        """
        index, unacked, tag = held
        due = int(self._repark(keys=[parked_key(queue_list), index, unacked],
                               args=[delay, queue_list, payload, tag]))
        return None if due < 0 else due

    def move_due(self, queue_lists: Sequence[str], limit: int = MOVE_LIMIT) -> tuple[int, float | None]:
        """Move due messages onto their queues: (how many moved, seconds until the next, or None).

        0.0 seconds means more were due than one call moves: call again at once.
        """
        if not queue_lists:
            return 0, None
        moved, next_ms = self._move(keys=[parked_key(q) for q in queue_lists], args=[limit])
        next_ms = int(next_ms)
        return int(moved), (None if next_ms < 0 else next_ms / 1000)

    def count(self, queue_list: str) -> int:
        """Messages parked for ``queue_list``."""
        return int(self.client.zcard(parked_key(queue_list)))
