"""The bulk publisher's messages are Celery's own task messages (pure: no Redis)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from producer.celeryapp import make_app
from producer.publish import Outgoing, RedisBulkPublisher, random_uuids
from worker.jobs import TASK_NAME


def celery_message(publisher: RedisBulkPublisher, out: Outgoing) -> dict[str, Any]:
    """What kombu's Redis transport stores for ``send_task`` of the same task (no delivery tag)."""
    app = publisher.app
    headers, properties, body, _ = app.amqp.as_task_v2(
        out.task_id, TASK_NAME, args=(), kwargs=out.kwargs, argsrepr="()", kwargsrepr=out.kwargsrepr,
        reply_to=app.thread_oid)
    return {"body": base64.b64encode(json.dumps(body).encode()).decode(), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": headers,
            "properties": {**properties, "delivery_mode": 2,
                           "delivery_info": {"exchange": "", "routing_key": publisher.queue},
                           "priority": 0, "body_encoding": "base64"}}


@pytest.mark.parametrize(("kwargs", "shown"), [
    ({"job": {"api": "a", "url": "http://h/é{x}\"\\", "json": {"k": [1, None, "}{"]}}, "batch_id": "b"},
     'a "quoted" {shown} é \\ }'),
    ({}, ""),
])
@pytest.mark.parametrize("encoded", [False, True], ids=["kwargs", "kwargs_json"])
def test_bulk_message_is_the_message_celery_would_send(kwargs: dict[str, Any], shown: str,
                                                        encoded: bool) -> None:
    publisher = RedisBulkPublisher(make_app(), client=None)  # type: ignore[arg-type]
    out = Outgoing(str(uuid.uuid4()), kwargs, shown, json.dumps(kwargs) if encoded else None)
    message = json.loads(publisher.envelope(out))
    tag = message["properties"].pop("delivery_tag")
    assert message == celery_message(publisher, out)
    assert str(uuid.UUID(tag)) == tag
    other = json.loads(publisher.envelope(out))["properties"]["delivery_tag"]
    assert other != tag


def test_random_uuids_are_distinct_version_4_uuids() -> None:
    ids = random_uuids(2000)
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)
