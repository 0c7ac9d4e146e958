"""Publishing request jobs as ordinary Celery task messages, in bulk where the broker allows.

On a Redis broker, messages are built once per job and pushed in pipelined chunks:
one round trip per chunk instead of one (plus a task-sent event) per message. They are
the same messages ``send_task`` writes, so any worker of this app consumes them and
Flower shows them from the moment a worker receives them. Other brokers publish
through Celery's producer, one message at a time.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from celery import Celery

from worker.jobs import TASK_NAME
from worker.redisconn import command_client
from worker.settings import Settings

#: Bits of a 128-bit random number kept and set to make it a version 4 (random) UUID.
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def random_uuids(count: int) -> list[str]:
    """``count`` strings like ``str(uuid.uuid4())``, from one read of ``os.urandom``."""
    raw = os.urandom(16 * count)
    ids = []
    for start in range(0, 16 * count, 16):
        h = "%032x" % (int.from_bytes(raw[start:start + 16], "big") & _UUID4_KEEP | _UUID4_SET)
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


@dataclass(frozen=True)
class Outgoing:
    """One job to publish: its task id, the task's keyword arguments, and what Flower shows."""

    task_id: str
    kwargs: dict[str, Any]
    kwargsrepr: str
    #: ``json.dumps(kwargs)``, when the caller has it already: the bulk publisher uses it.
    kwargs_json: str | None = None


class Publisher(Protocol):
    def publish(self, messages: Sequence[Outgoing]) -> None: ...


class CeleryPublisher:
    """Celery's own producer, one message per round trip (any broker)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        with self.app.producer_or_acquire() as producer:
            for out in messages:
                self.app.send_task(TASK_NAME, kwargs=out.kwargs, task_id=out.task_id,
                                   producer=producer, kwargsrepr=out.kwargsrepr)


#: Stand-ins for what differs between two messages, while the message template is built.
_ID, _KWARGSREPR, _TAG, _BODY = "@@reqworker-id@@", "@@reqworker-kwargsrepr@@", "@@reqworker-tag@@", \
    "@@reqworker-body@@"
#: What follows a task's kwargs in its body: Celery's embed, with no callbacks, chain or chord.
_EMBED = b', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def _json_text(value: str) -> str:
    """``value`` as it appears inside a JSON string."""
    return json.dumps(value)[1:-1]


class RedisBulkPublisher:
    """Pushes task messages straight onto the queue's Redis list, a pipeline per chunk.

    A message is Celery's own (``as_task_v2``) built once as a template; each job only
    fills in its task id, kwargs and Flower view, so a job costs one ``json.dumps`` of
    its kwargs instead of two of the whole message.
    """

    def __init__(self, app: Celery, client: redis.Redis, url: str | None = None) -> None:
        self.app = app
        self.client = client
        self.queue = app.conf.task_default_queue
        #: The broker's URL, when known: ``shares`` compares it.
        self.url = url
        self._template = self._build_template()

    def _message(self, task_id: str, kwargs: dict[str, Any], kwargsrepr: str, body: str,
                 tag: str) -> dict[str, Any]:
        headers, properties, _, _ = self.app.amqp.as_task_v2(
            task_id, TASK_NAME, args=(), kwargs=kwargs, argsrepr="()",
            kwargsrepr=kwargsrepr, reply_to=self.app.thread_oid,
        )
        return {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self.queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": tag,
            },
        }

    def _build_template(self) -> tuple[list[bytes], tuple[str, ...]]:
        """The message cut at its variable fields: the pieces between them, and which field
        (``id``, ``kwargsrepr``, ``body``, ``tag``) goes after each piece but the last."""
        text = json.dumps(self._message(_ID, {}, _KWARGSREPR, _BODY, _TAG))
        markers = {_ID: "id", _KWARGSREPR: "kwargsrepr", _BODY: "body", _TAG: "tag"}
        pieces: list[bytes] = []
        order: list[str] = []
        while True:
            found = [(text.find(m), m) for m in markers if m in text]
            if not found:
                pieces.append(text.encode())
                return pieces, tuple(order)
            at, marker = min(found)
            pieces.append(text[:at].encode())
            order.append(markers[marker])
            text = text[at + len(marker):]

    def envelope(self, out: Outgoing, tag: str | None = None) -> bytes:
        """The message exactly as kombu's Redis transport stores a published task."""
        kwargs = out.kwargs_json if out.kwargs_json is not None else json.dumps(out.kwargs)
        fields = {
            "id": _json_text(out.task_id).encode(),
            "kwargsrepr": _json_text(out.kwargsrepr).encode(),
            "body": base64.b64encode(b"[[], " + kwargs.encode() + _EMBED),
            "tag": (tag or random_uuids(1)[0]).encode(),
        }
        pieces, order = self._template
        parts = [pieces[0]]
        for name, piece in zip(order, pieces[1:], strict=True):
            parts += (fields[name], piece)
        return b"".join(parts)

    def publish(self, messages: Sequence[Outgoing]) -> None:
        self.push(self.client, messages)

    def push(self, pipe: Any, messages: Sequence[Outgoing]) -> None:
        """Push the messages with ``pipe``: this publisher's client, or a pipeline on its Redis."""
        if messages:
            tags = random_uuids(len(messages))
            pipe.lpush(self.queue, *(self.envelope(out, tag)
                                     for out, tag in zip(messages, tags, strict=True)))

    def shares(self, url: str | None) -> bool:
        """True when ``url`` is this publisher's Redis: the same URL, so surely the same database."""
        return url is not None and url == self.url


def make_publisher(app: Celery, settings: Settings) -> Publisher:
    if settings.broker_is_redis:
        return RedisBulkPublisher(app, command_client(settings.broker_url, settings),
                                  settings.broker_url)
    return CeleryPublisher(app)
