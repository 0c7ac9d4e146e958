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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from celery import Celery

from worker.jobs import TASK_NAME
from worker.redisconn import command_client
from worker.settings import Settings


@dataclass(frozen=True)
class Outgoing:
    """One job to publish: its task id, the task's keyword arguments, and what Flower shows."""

    task_id: str
    kwargs: dict[str, Any]
    kwargsrepr: str


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
_EMBED = ', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def _json_text(value: str) -> str:
    """``value`` as it appears inside a JSON string."""
    return json.dumps(value)[1:-1]


class RedisBulkPublisher:
    """Pushes task messages straight onto the queue's Redis list, a pipeline per chunk.

    A message is Celery's own (``as_task_v2``) built once as a template; each job only
    fills in its task id, kwargs and Flower view, so a job costs one ``json.dumps`` of
    its kwargs instead of two of the whole message.
    """

    def __init__(self, app: Celery, client: redis.Redis[bytes], url: str | None = None) -> None:
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

    def _build_template(self) -> str:
        """The message as a format string with fields ``id``, ``kwargsrepr``, ``body``, ``tag``."""
        text = json.dumps(self._message(_ID, {}, _KWARGSREPR, _BODY, _TAG))
        text = text.replace("{", "{{").replace("}", "}}")
        for marker, field in ((_ID, "{id}"), (_KWARGSREPR, "{kwargsrepr}"), (_BODY, "{body}"),
                              (_TAG, "{tag}")):
            text = text.replace(marker, field)
        return text

    def envelope(self, out: Outgoing) -> str:
        """The message exactly as kombu's Redis transport stores a published task."""
        body = "[[], " + json.dumps(out.kwargs) + _EMBED
        return self._template.format(
            id=_json_text(out.task_id), kwargsrepr=_json_text(out.kwargsrepr),
            body=base64.b64encode(body.encode()).decode(), tag=str(uuid.uuid4()))

    def publish(self, messages: Sequence[Outgoing]) -> None:
        self.push(self.client, messages)

    def push(self, pipe: Any, messages: Sequence[Outgoing]) -> None:
        """Push the messages with ``pipe``: this publisher's client, or a pipeline on its Redis."""
        if messages:
            pipe.lpush(self.queue, *(self.envelope(out) for out in messages))

    def shares(self, url: str | None) -> bool:
        """True when ``url`` is this publisher's Redis: the same URL, so surely the same database."""
        return url is not None and url == self.url


def make_publisher(app: Celery, settings: Settings) -> Publisher:
    if settings.broker_is_redis:
        return RedisBulkPublisher(app, command_client(settings.broker_url, settings),
                                  settings.broker_url)
    return CeleryPublisher(app)
