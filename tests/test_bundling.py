"""Which jobs a bulk enqueue packs into one message, and the bundles it writes (pure: no Redis)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from producer.bundling import MIN_MESSAGES, bundle_size, pack, packable
from producer.celeryapp import make_app
from producer.chunks import message_json
from producer.publish import Outgoing, RedisBulkPublisher, random_uuids
from worker.durations import Rate
from worker.jobs import BUNDLE_TASK_NAME, TASK_NAME, parse_job
from worker.profiles import Profile
from worker.settings import Settings, SettingsError

PROFILES = {
    "open": Profile(name="open", base_url="https://api.example"),
    "limited": Profile(name="limited", base_url="https://api.example", rate_limit=Rate(10, 1.0)),
    "capped": Profile(name="capped", base_url="https://api.example", concurrency=2),
    "adaptive": Profile(name="adaptive", base_url="https://api.example", adaptive_rate=True),
}


def outgoing(raw: dict[str, Any], batch_id: str = "b1") -> Outgoing:
    job = parse_job(raw, PROFILES)
    message = job.to_message()
    text = message_json(job, message)
    return Outgoing(random_uuids(1)[0], {"job": message, "batch_id": batch_id},
                    job.shown_arguments(batch_id), None, packable=packable(job, PROFILES), job_json=text)


@pytest.mark.parametrize(("raw", "shares"), [
    ({"api": "open", "path": "/a"}, True),
    ({"api": "open", "method": "PUT", "path": "/a", "json": {}}, True),
    ({"api": "open", "method": "POST", "path": "/a", "json": {}, "retry_unsafe": True}, True),
    ({"api": "open", "method": "POST", "path": "/a", "json": {}}, False),
    ({"api": "open", "method": "PATCH", "path": "/a", "json": {}}, False),
    ({"api": "limited", "path": "/a"}, False),
    ({"api": "capped", "path": "/a"}, False),
    ({"api": "adaptive", "path": "/a"}, False),
])
def test_only_jobs_with_no_shared_budget_and_safe_to_resend_share_a_message(
        raw: dict[str, Any], shares: bool) -> None:
    assert packable(parse_job(raw, PROFILES), PROFILES) is shares


@pytest.mark.parametrize(("count", "per_message", "size"), [
    (1, 16, 1), (MIN_MESSAGES, 16, 1), (MIN_MESSAGES + 1, 16, 2), (100, 16, 4),
    (500, 16, 16), (5000, 16, 16), (500, 1, 1), (500, 4, 4),
])
def test_a_chunk_spreads_over_at_least_min_messages_of_at_most_per_message_jobs(
        count: int, per_message: int, size: int) -> None:
    assert bundle_size(count, per_message) == size


def test_pack_bundles_the_packable_jobs_and_leaves_the_others_alone() -> None:
    jobs = [outgoing({"api": "open", "path": f"/p/{i}", "key": i}) for i in range(100)]
    alone = [outgoing({"api": "limited", "path": "/l"}),
             outgoing({"api": "open", "method": "POST", "path": "/p", "json": {"n": 1.5}})]
    packed = pack(jobs[:50] + alone + jobs[50:], per_message=16)
    singles = [m for m in packed if m.task == TASK_NAME]
    bundles = [m for m in packed if m.task == BUNDLE_TASK_NAME]
    assert singles == alone
    assert [len(b.kwargs["jobs"]) for b in bundles] == [4] * 25
    # Every packable job is in exactly one bundle, in order, under its own id.
    assert [e["id"] for b in bundles for e in b.kwargs["jobs"]] == [m.task_id for m in jobs]
    assert len({b.task_id for b in bundles}) == 25
    for bundle in bundles:
        assert bundle.kwargs_json is not None
        assert json.loads(bundle.kwargs_json) == json.loads(json.dumps(bundle.kwargs))
        assert bundle.kwargs["batch_id"] == "b1"
        shown = json.loads(bundle.kwargsrepr)
        assert shown["jobs"] == 4
        assert shown["ids"] == [e["id"] for e in bundle.kwargs["jobs"]]
        assert "open GET https://api.example/p/" in shown["first"]


def test_one_job_per_message_when_asked() -> None:
    jobs = [outgoing({"api": "open", "path": f"/p/{i}"}) for i in range(500)]
    assert pack(jobs, per_message=1) == jobs


def test_a_bundle_message_is_the_message_celery_would_send_for_the_bundle_task() -> None:
    publisher = RedisBulkPublisher(make_app(), client=None)  # type: ignore[arg-type]
    bundle = pack([outgoing({"api": "open", "path": f"/p/{i}"}) for i in range(64)], per_message=16)[0]
    message = json.loads(publisher.envelope(bundle))
    assert message["headers"]["task"] == BUNDLE_TASK_NAME
    assert message["headers"]["id"] == bundle.task_id
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([], json.loads(json.dumps(bundle.kwargs)))
    single = pack([outgoing({"api": "open", "path": "/one"})], per_message=16)[0]
    assert json.loads(publisher.envelope(single))["headers"]["task"] == TASK_NAME


@pytest.mark.parametrize(("value", "problem"), [
    ("0", "must be greater than 0"), ("101", "must be at most 100"), ("many", "whole number of jobs"),
])
def test_a_bad_jobs_per_message_is_one_clear_error(value: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env({"REQWORKER_JOBS_PER_MESSAGE": value})
    assert Settings.from_env({}).jobs_per_message == 16
    assert Settings.from_env({"REQWORKER_JOBS_PER_MESSAGE": "1"}).jobs_per_message == 1
