"""Messages no worker can run, set aside in the broker's Redis instead of killing a worker.

A message whose envelope or body cannot be decoded, or that is not a reqworker job,
is moved to ``<queue>:dead`` (newest first, at most ``KEEP`` entries, expiring after
``TTL_S``) with why it was refused. Nothing of it is logged; ``reqworker dead-letters``
lists what was set aside.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

import redis

from worker.jobs import BUNDLE_TASK_NAME, TASK_NAME

#: Dead letters kept per queue; older ones are dropped.
KEEP = 1000
#: Seconds a dead-letter list lives after its last entry.
TTL_S = 7 * 24 * 3600
#: Bytes of a refused message kept for a person to look at.
KEEP_BYTES = 64 * 1024


def dead_letter_key(queue: str) -> str:
    """List: a queue's refused messages, newest first."""
    return f"{queue}:dead"


def dead_count_key(queue: str) -> str:
    """Counter: how many messages of a queue were ever refused (expires with the list)."""
    return f"{queue}:dead:count"


def poison_reason(raw: bytes | str, *, job: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """The decoded kombu message, or why it is no runnable reqworker job.

    With ``job=False`` (a queue of Celery's own, such as a control reply) only the
    envelope is checked: kombu cannot deliver a message that is not a JSON object.
    """
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return None, "the message is not UTF-8 text"
    try:
        message = json.loads(text)
    except ValueError:
        return None, "the message is not JSON"
    if not isinstance(message, dict):
        return None, f"the message is a JSON {type(message).__name__}, not an object"
    if not job:
        return message, None
    headers, properties, body = message.get("headers"), message.get("properties"), message.get("body")
    if not isinstance(headers, dict) or not isinstance(properties, dict) or not isinstance(body, str):
        return None, "the message has no headers, properties and body"
    if headers.get("task") not in (TASK_NAME, BUNDLE_TASK_NAME):
        return None, f"the message is not a reqworker job (task {str(headers.get('task'))[:80]!r})"
    if properties.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body, validate=True).decode()
        except (binascii.Error, ValueError):
            return None, "the message body is not base64 text"
    try:
        call = json.loads(body)
    except ValueError:
        return None, "the message body is not JSON"
    if not (isinstance(call, list) and len(call) == 3 and isinstance(call[0], list)
            and isinstance(call[1], dict) and isinstance(call[2], dict)):
        return None, "the message body is not a task call ([args, kwargs, options])"
    return message, None


class DeadLetters:
    """Stores and reads refused messages in the broker's Redis."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client

    def store(self, queue: str, raw: bytes | str, reason: str) -> None:
        data = raw if isinstance(raw, bytes) else raw.encode()
        entry = {
            "time": time.time(),
            "queue": queue,
            "reason": reason,
            "size": len(data),
            "message": data[:KEEP_BYTES].decode(errors="replace"),
            "truncated": len(data) > KEEP_BYTES,
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(dead_letter_key(queue), json.dumps(entry))
        pipe.ltrim(dead_letter_key(queue), 0, KEEP - 1)
        pipe.expire(dead_letter_key(queue), TTL_S)
        pipe.incr(dead_count_key(queue))
        pipe.expire(dead_count_key(queue), TTL_S)
        pipe.execute()

    def read(self, queue: str, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """(messages ever refused while the count lived, the newest ``limit`` entries)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(dead_count_key(queue))
        pipe.lrange(dead_letter_key(queue), 0, max(limit, 1) - 1)
        count, entries = pipe.execute()
        return int(count or 0), [json.loads(e) for e in entries]
