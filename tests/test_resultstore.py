"""A finished job's stored result is never replaced by a RETRY written after it."""

from __future__ import annotations

import uuid

from celery import Celery, states

from producer.demo.localredis import LocalRedis
from worker.resultstore import FinishedStaysFinished, guarded


def backend(redis_server: LocalRedis) -> FinishedStaysFinished:
    app = Celery("t", set_as_current=False)
    app.conf.result_backend = guarded(redis_server.url)
    result = app.backend
    assert isinstance(result, FinishedStaysFinished)
    return result


def test_a_late_retry_does_not_replace_a_result(redis_server: LocalRedis) -> None:
    store, task_id = backend(redis_server), str(uuid.uuid4())
    store.store_result(task_id, {"ok": True}, states.SUCCESS)
    store.store_result(task_id, {"exc_type": "RetryLater"}, states.RETRY)
    assert store.get_task_meta(task_id)["status"] == states.SUCCESS


def test_a_late_retry_does_not_replace_a_failure(redis_server: LocalRedis) -> None:
    store, task_id = backend(redis_server), str(uuid.uuid4())
    store.store_result(task_id, ValueError("gone"), states.FAILURE)
    store.store_result(task_id, {"exc_type": "RetryLater"}, states.RETRY)
    assert store.get_task_meta(task_id)["status"] == states.FAILURE


def test_interim_states_are_stored_while_the_job_runs(redis_server: LocalRedis) -> None:
    store, task_id = backend(redis_server), str(uuid.uuid4())
    store.store_result(task_id, {"exc_type": "RetryLater"}, states.RETRY)
    assert store.get_task_meta(task_id)["status"] == states.RETRY
    store.store_result(task_id, {"ok": True}, states.SUCCESS)
    assert store.get_task_meta(task_id)["status"] == states.SUCCESS


def test_only_redis_urls_are_guarded() -> None:
    assert guarded("redis://h/0").startswith("worker.resultstore:FinishedStaysFinished+")
    assert guarded("rpc://") == "rpc://"
