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
import re
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

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


class Outgoing(NamedTuple):
    """One job to publish: its task id, the task's keyword arguments, and what Flower shows."""

    task_id: str
    kwargs: dict[str, Any]
    kwargsrepr: str
    #: ``json.dumps(kwargs)`` as UTF-8, when the caller has it already: the bulk publisher uses it.
    kwargs_json: bytes | None = None
    #: The task to run: one job (``reqworker.request``), or a bundle of them.
    task: str = TASK_NAME
    #: May share a message with other jobs (``producer.bundling``).
    packable: bool = False
    #: ``json.dumps(kwargs["job"])`` as UTF-8, when the caller has it: a bundle is built from it.
    job_json: bytes | None = None


class Publisher(Protocol):
    #: Jobs packed into one message at most (``producer.bundling``); 1: each job alone.
    per_message: int

    def publish(self, messages: Sequence[Outgoing]) -> None: ...


class CeleryPublisher:
    """Celery's own producer, one message per round trip (any broker)."""

    def __init__(self, app: Celery, per_message: int = 1) -> None:
        self.app = app
        self.per_message = per_message

    def publish(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        with self.app.producer_or_acquire() as producer:
            for out in messages:
                self.app.send_task(out.task, kwargs=out.kwargs, task_id=out.task_id,
                                   producer=producer, kwargsrepr=out.kwargsrepr)


#: Stand-ins for what differs between two messages, while the message template is built.
_ID, _KWARGSREPR, _TAG, _BODY = "@@reqworker-id@@", "@@reqworker-kwargsrepr@@", "@@reqworker-tag@@", \
    "@@reqworker-body@@"
#: What follows a task's kwargs in its body: Celery's embed, with no callbacks, chain or chord.
_EMBED = b', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def _json_text(value: str) -> str:
    """``value`` as it appears inside a JSON string (as ``json.dumps`` writes it)."""
    return encode_basestring_ascii(value)[1:-1]


class RedisBulkPublisher:
    """Pushes task messages straight onto the queue's Redis list, a pipeline per chunk.

    A message is Celery's own (``as_task_v2``) built once as a bytes template; each job
    only fills in its task id, kwargs (encoded once by the caller, ``Outgoing.kwargs_json``)
    and Flower view, instead of two ``json.dumps`` of the whole message.
    """

    def __init__(self, app: Celery, client: redis.Redis[bytes], url: str | None = None,
                 per_message: int = 1) -> None:
        self.app = app
        self.client = client
        self.queue = app.conf.task_default_queue
        #: The broker's URL, when known: ``shares`` compares it.
        self.url = url
        self.per_message = per_message
        self._templates: dict[str, tuple[bytes, Callable[[tuple[bytes, ...]], tuple[bytes, ...]]]] = {}

    def _message(self, task: str, task_id: str, kwargs: dict[str, Any], kwargsrepr: str, body: str,
                 tag: str) -> dict[str, Any]:
        headers, properties, _, _ = self.app.amqp.as_task_v2(
            task_id, task, args=(), kwargs=kwargs, argsrepr="()",
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

    def _template(self, task: str) -> tuple[bytes, Callable[[tuple[bytes, ...]], tuple[bytes, ...]]]:
        if task not in self._templates:
            self._templates[task] = self._build_template(task)
        return self._templates[task]

    def _build_template(self, task: str) -> tuple[bytes, Callable[[tuple[bytes, ...]], tuple[bytes, ...]]]:
        """The message of ``task`` as a bytes %-format, and what picks its values, in their
        order, from ``(id, kwargsrepr, body, tag)`` (the id comes twice: id and correlation_id)."""
        text = json.dumps(self._message(task, _ID, {}, _KWARGSREPR, _BODY, _TAG)).replace("%", "%%")
        markers = (_ID, _KWARGSREPR, _BODY, _TAG)
        order: list[int] = []

        def placeholder(found: re.Match[str]) -> str:
            order.append(markers.index(found.group()))
            return "%b"

        template = re.sub("|".join(map(re.escape, markers)), placeholder, text).encode()
        if len(order) < 2 or set(order) != {0, 1, 2, 3}:
            raise RuntimeError(f"Celery's task message changed shape: {text}")
        return template, itemgetter(*order)

    def envelope(self, out: Outgoing, tag: str | None = None) -> bytes:
        """The message exactly as kombu's Redis transport stores a published task."""
        kwargs = out.kwargs_json if out.kwargs_json is not None else json.dumps(out.kwargs).encode()
        template, pick = self._template(out.task)
        return template % pick((
            _json_text(out.task_id).encode(),
            _json_text(out.kwargsrepr).encode(),
            base64.b64encode(b"[[], " + kwargs + _EMBED),
            (tag or random_uuids(1)[0]).encode(),
        ))

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
                                  settings.broker_url, settings.jobs_per_message)
    return CeleryPublisher(app, settings.jobs_per_message)
