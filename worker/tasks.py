"""The request task: thin glue from a Celery message to the executor and back."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from typing import Any

from celery import Task
from celery.app import trace as celery_trace
from celery.exceptions import Ignore
from celery.exceptions import Retry as CeleryRetry
from celery.states import READY_STATES, SUCCESS

from worker import metrics
from worker.app import app
from worker.crashpoint import crash_point
from worker.errors import JobFailed, RetryLater, WaitLater
from worker.executor import Done, JobContext, RunAgain, Spent
from worker.garbage import release_retry
from worker.jobs import TASK_NAME, UNSAFE_METHODS, Job
from worker.redact import shown_url
from worker.runtime import runtime
from worker.transport import repark

log = logging.getLogger("reqworker.task")

# Celery logs up to 1 KB of every result at INFO, and a result holds the API's body:
# log the job's summary (what Flower shows, credentials redacted) instead.
celery_trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(kwargs)s"


class RequestTask(Task):
    """Keeps the batch counters as jobs finish or wait, after Celery stored their state."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: dict[str, Any]) -> None:
        stored(task_id, kwargs, ok=True)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: dict[str, Any],
                   einfo: Any) -> None:
        stored(task_id, kwargs, ok=False)

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: dict[str, Any],
                 einfo: Any) -> None:
        release_retry(einfo)
        if kwargs.get("batch_id"):
            counters = runtime().counters
            state = counters.waiting if isinstance(exc, WaitLater) else counters.retrying
            state(kwargs["batch_id"], task_id)


def stored(task_id: str, kwargs: dict[str, Any], *, ok: bool) -> None:
    """After Celery stored a job's outcome: forget its in-flight mark, count it in its batch."""
    crash_point("after-store", task_id)
    job = kwargs.get("job")
    if isinstance(job, dict) and str(job.get("method", "")).upper() in UNSAFE_METHODS:
        runtime().inflight.end(task_id)
    if kwargs.get("batch_id"):
        runtime().counters.finished(kwargs["batch_id"], task_id, ok=ok)


def flower_view(message: dict[str, Any], batch_id: str | None) -> str:
    """What Flower shows of a retried job's arguments, as at enqueue (``Job.shown_arguments``)."""
    try:
        return Job(**message).shown_arguments(batch_id)
    except TypeError:  # not a job message: show no more than where it went
        if not isinstance(message, dict):
            return json.dumps({"job": f"not a job: {type(message).__name__}", "batch_id": batch_id})
        summary = f"{message.get('api')} {message.get('method')} {shown_url(str(message.get('url')))}"
        return json.dumps({"job": summary, "batch_id": batch_id})


def publish_next_page(task: Task, job: Job, batch_id: str | None) -> None:
    """Run the next page as a job of the same batch, counted before this one finishes."""
    job_id = str(uuid.uuid4())
    message = job.to_message()
    if batch_id:
        # The batch record shows the page; a credential in the API's next link stays out of it.
        shown = {**message, "url": shown_url(job.url)}
        runtime().counters.add_job(batch_id, {"id": job_id, "line": None, "job": shown})
    task.app.send_task(TASK_NAME, kwargs={"job": message, "batch_id": batch_id}, task_id=job_id,
                       kwargsrepr=job.shown_arguments(batch_id))


def run_again_reason(job_id: str, job: Any, outcome: RunAgain) -> RetryLater:
    """Count and log a job that runs again; what Flower shows for it: a retry or a wait."""
    if outcome.backoff:
        metrics.retried(job)
        log.info("job %s countdown=%.6g %s", job_id, outcome.countdown_s, outcome.reason)
        return RetryLater(outcome.reason)
    log.info("job %s waits %.6g s: %s", job_id, outcome.countdown_s, outcome.reason)
    return WaitLater(f"{outcome.reason}; runs again in {outcome.countdown_s:.3g} s")


def broker_countdown(countdown_s: float) -> float:
    """The countdown to ask Celery for, after sleeping off a sub-second one on RabbitMQ.

    Celery's native delayed delivery (RabbitMQ) counts whole seconds and refuses a
    countdown under one; a wait that short is slept here instead. On Redis every
    countdown waits in Redis (``worker.transport``).
    """
    if 0 < countdown_s < 1 and not runtime().settings.broker_is_redis:
        time.sleep(countdown_s)
        return 0.0
    return countdown_s


def _wait_in_redis(task: Task, countdown_s: float, kwargs: dict[str, Any], kwargsrepr: str) -> bool:
    """Send a job back to wait in Redis (a wait or a backoff): its held message, rewritten, parked again.

    Cheaper than Celery's retry (a new message, then an acknowledgement of the old one):
    one Redis call does both. False where the transport cannot (another broker, a
    prefork child): then Celery's retry sends a new message.
    """
    if not runtime().settings.broker_is_redis:
        return False

    def rewrite(headers: dict[str, Any], body: Any) -> tuple[dict[str, Any], Any]:
        args, _, embed = body
        # What Celery's retry would change: one more retry, and what Flower shows. No ETA:
        # the message is parked until it is due, and runs when it arrives.
        headers.update(eta=None, retries=int(headers.get("retries") or 0) + 1, kwargsrepr=kwargsrepr)
        return headers, [args, kwargs, embed]

    return repark(task.request.id, max(math.ceil(countdown_s * 1000), 0), rewrite)


@app.task(bind=True, base=RequestTask, name=TASK_NAME, max_retries=None, acks_late=True,
          throws=(JobFailed,), resultrepr_maxsize=64)
def request(
    self: Task,
    job: dict[str, Any],
    batch_id: str | None = None,
    progress: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Make one HTTP attempt at ``job``; retry it with a countdown, or finish it."""
    task_id = self.request.id
    redelivered = (self.request.delivery_info or {}).get("redelivered")
    if redelivered:
        status = self.backend.get_task_meta(task_id).get("status")
        if status in READY_STATES:
            # A second delivery of a job that already finished (its worker died before
            # acknowledging it, perhaps before counting it): leave the stored result
            # alone, and make sure the batch counted it.
            log.warning("job %s already finished; ignoring a repeated delivery", task_id)
            stored(task_id, self.request.kwargs or {}, ok=status == SUCCESS)
            raise Ignore()
    ctx = JobContext(job_id=task_id, batch_id=batch_id)
    outcome = runtime().executor.run(job, Spent.from_message(progress), ctx)
    if isinstance(outcome, Done):
        metrics.ended(job, succeeded=True)
        if outcome.next_job is not None:
            publish_next_page(self, outcome.next_job, batch_id)
        return outcome.record
    if isinstance(outcome, RunAgain):
        why = run_again_reason(task_id, job, outcome)
        kwargs = {"job": job, "batch_id": batch_id, "progress": outcome.spent.to_message()}
        # Celery would show the whole job again; Flower gets the summary, as at enqueue.
        shown = flower_view(job, batch_id)
        if _wait_in_redis(self, outcome.countdown_s, kwargs, shown):
            raise CeleryRetry(exc=why, when=outcome.countdown_s)
        try:
            raise self.retry(countdown=broker_countdown(outcome.countdown_s), kwargs=kwargs, exc=why,
                             kwargsrepr=shown)
        except (CeleryRetry, Ignore):
            raise
        except Exception as exc:
            # Celery raises Reject when the retry message cannot be sent; the job would
            # then stay pending for ever and its batch never finish.
            why_not = f"the retry could not be scheduled ({type(exc).__name__}); last: {outcome.reason}"
            raise JobFailed(runtime().executor.unschedulable(job, outcome.spent, ctx, why_not)) from None
    metrics.ended(job, succeeded=False)
    raise JobFailed(outcome.record)
