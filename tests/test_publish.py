"""The bulk publisher's messages are Celery's own task messages (pure: no Redis)."""

from __future__ import annotations

import base64
import json
import math
import uuid
from typing import Any

import pytest

from producer.celeryapp import make_app
from producer.chunks import fingerprint, message_json
from producer.publish import Outgoing, RedisBulkPublisher, random_uuids
from worker.jobs import TASK_NAME, parse_job
from worker.profiles import Profile


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
    out = Outgoing(str(uuid.uuid4()), kwargs, shown, json.dumps(kwargs).encode() if encoded else None)
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


PROFILES = {"ex": Profile(name="ex", base_url="https://api.example.com/v1")}
#: Jobs whose messages orjson writes, and jobs it must leave to the standard encoder.
JOBS = [
    {"api": "ex", "path": "/a", "params": {"q": "café ☕", "n": 3, "on": True, "many": ["x", 2]}},
    {"api": "ex", "path": "/a", "key": 2**70, "params": {"big": 2**64}},
    {"api": "ex", "path": "/a", "params": {"nan": math.nan, "inf": [math.inf, 1.5]}},
    {"api": "ex", "path": "/a", "params": {"lone": "\ud800"}, "headers": {"X-A": "é"}},
    {"api": "ex", "method": "POST", "path": "/a", "json": {"f": [math.nan, -math.inf, 0.1], "s": "\n"}},
    {"api": "ex", "method": "POST", "path": "/a", "data": {"n": 1e300}, "paginate": None},
    {"api": "ex", "path": "/a", "paginate": {"next": "$.next", "max_pages": 3}, "page": 2,
     "pages_seen": ["0123456789abcdef"]},
]


@pytest.mark.parametrize("raw", JOBS)
def test_a_message_reads_back_as_the_standard_encoder_writes_it(raw: dict[str, Any]) -> None:
    job = parse_job(raw, PROFILES)
    message = job.to_message()
    text = message_json(job, message)
    assert b"\n" not in text
    # NaN != NaN: compare what each reads back as, written again by one encoder
    assert json.dumps(json.loads(text)) == json.dumps(json.loads(json.dumps(message)))


def test_fingerprints_tell_requests_apart_and_ignore_the_order_of_params() -> None:
    def fp(**params: Any) -> str:
        return fingerprint(parse_job({"api": "ex", "path": "/a", "params": params}, PROFILES))

    assert fp(a="1", b=2) == fp(b=2, a="1")
    distinct = [fp(), fp(a="1"), fp(a=1), fp(a=1.0), fp(a=True), fp(a=math.nan), fp(a=math.inf),
                fp(a=-math.inf), fp(a=2**64), fp(a=2**64 + 1), fp(a="\ud800"), fp(a="\udc00"),
                fp(a=["1"]), fp(a=[math.nan]), fp(a=[math.inf])]
    assert len(set(distinct)) == len(distinct)
