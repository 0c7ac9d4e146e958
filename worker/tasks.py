"""The request task: thin glue from a Celery message to the executor and back."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.states import READY_STATES

from worker.app import app
from worker.errors import JobFailed, RetryLater
from worker.executor import Done, JobContext, Progress, Retry
from worker.jobs import TASK_NAME
from worker.runtime import runtime

log = logging.getLogger("reqworker.task")


@app.task(bind=True, name=TASK_NAME, max_retries=None, acks_late=True, throws=(JobFailed,))
def request(
    self: Task,
    job: dict[str, Any],
    batch_id: str | None = None,
    progress: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Make one HTTP attempt at ``job``; retry it with a countdown, or finish it."""
    task_id = self.request.id
    if self.backend.get_task_meta(task_id).get("status") in READY_STATES:
        # A second delivery of a job that already finished (its worker died before
        # acknowledging it): leave the stored result alone.
        log.warning("job %s already finished; ignoring a repeated delivery", task_id)
        raise Ignore()
    ctx = JobContext(job_id=task_id, batch_id=batch_id)
    outcome = runtime().executor.run(job, Progress.from_message(progress), ctx)
    if isinstance(outcome, Done):
        return outcome.record
    if isinstance(outcome, Retry):
        if outcome.backoff:
            log.info("job %s countdown=%.6g %s", task_id, outcome.countdown_s, outcome.reason)
        else:
            log.info("job %s waits %.6g s: %s", task_id, outcome.countdown_s, outcome.reason)
        raise self.retry(
            countdown=outcome.countdown_s,
            kwargs={"job": job, "batch_id": batch_id, "progress": outcome.progress.to_message()},
            exc=RetryLater(outcome.reason),
        )
    raise JobFailed(outcome.record)
