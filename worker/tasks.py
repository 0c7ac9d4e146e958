"""The request task: thin glue from a Celery message to the executor and back."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.states import READY_STATES

from worker import metrics
from worker.app import app
from worker.errors import JobFailed, RetryLater
from worker.executor import Done, JobContext, Progress, Retry
from worker.jobs import TASK_NAME, Job
from worker.runtime import runtime

log = logging.getLogger("reqworker.task")


class RequestTask(Task):
    """Keeps the batch counters as jobs finish or wait, after Celery stored their state."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: dict[str, Any]) -> None:
        if kwargs.get("batch_id"):
            runtime().counters.finished(kwargs["batch_id"], task_id, ok=True)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: dict[str, Any],
                   einfo: Any) -> None:
        if kwargs.get("batch_id"):
            runtime().counters.finished(kwargs["batch_id"], task_id, ok=False)

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: dict[str, Any],
                 einfo: Any) -> None:
        if kwargs.get("batch_id"):
            runtime().counters.retrying(kwargs["batch_id"], task_id)


def _flower_view(message: dict[str, Any], batch_id: str | None) -> str:
    """What Flower shows of a retried job's arguments, as at enqueue (``Job.shown_arguments``)."""
    try:
        return Job(**message).shown_arguments(batch_id)
    except TypeError:  # not a job message: show no more than where it went
        summary = f"{message.get('api')} {message.get('method')} {message.get('url')}"
        return json.dumps({"job": summary, "batch_id": batch_id})


def _publish_next_page(task: Task, job: Job, batch_id: str | None) -> None:
    """Run the next page as a job of the same batch, counted before this one finishes."""
    job_id = str(uuid.uuid4())
    message = job.to_message()
    if batch_id:
        runtime().counters.add_job(batch_id, {"id": job_id, "line": None, "job": message})
    task.app.send_task(TASK_NAME, kwargs={"job": message, "batch_id": batch_id}, task_id=job_id,
                       kwargsrepr=job.shown_arguments(batch_id))


def _broker_countdown(countdown_s: float) -> float:
    """The countdown to ask Celery for, after sleeping off a sub-second one on RabbitMQ.

    Celery's native delayed delivery (RabbitMQ) counts whole seconds and refuses a
    countdown under one; a wait that short is slept here instead. On Redis every
    countdown waits in Redis (``worker.transport``).
    """
    if 0 < countdown_s < 1 and not runtime().settings.broker_is_redis:
        time.sleep(countdown_s)
        return 0.0
    return countdown_s


@app.task(bind=True, base=RequestTask, name=TASK_NAME, max_retries=None, acks_late=True,
          throws=(JobFailed,))
def request(
    self: Task,
    job: dict[str, Any],
    batch_id: str | None = None,
    progress: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Make one HTTP attempt at ``job``; retry it with a countdown, or finish it."""
    task_id = self.request.id
    redelivered = (self.request.delivery_info or {}).get("redelivered")
    if redelivered and self.backend.get_task_meta(task_id).get("status") in READY_STATES:
        # A second delivery of a job that already finished (its worker died before
        # acknowledging it): leave the stored result alone.
        log.warning("job %s already finished; ignoring a repeated delivery", task_id)
        raise Ignore()
    ctx = JobContext(job_id=task_id, batch_id=batch_id)
    outcome = runtime().executor.run(job, Progress.from_message(progress), ctx)
    metrics.ended(job, outcome)
    if isinstance(outcome, Done):
        if outcome.next_job is not None:
            _publish_next_page(self, outcome.next_job, batch_id)
        return outcome.record
    if isinstance(outcome, Retry):
        if outcome.backoff:
            log.info("job %s countdown=%.6g %s", task_id, outcome.countdown_s, outcome.reason)
        else:
            log.info("job %s waits %.6g s: %s", task_id, outcome.countdown_s, outcome.reason)
        raise self.retry(
            countdown=_broker_countdown(outcome.countdown_s),
            kwargs={"job": job, "batch_id": batch_id, "progress": outcome.progress.to_message()},
            exc=RetryLater(outcome.reason),
            # Celery would show the whole job again; Flower gets the summary, as at enqueue.
            kwargsrepr=_flower_view(job, batch_id),
        )
    raise JobFailed(outcome.record)
