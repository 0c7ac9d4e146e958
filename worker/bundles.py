"""The bundle task: the jobs of one message, run one after another by one worker thread.

Why bundles exist, and which jobs share a message: ``producer.bundling``. Each job of a
bundle is what a ``reqworker.request`` task would be: the same attempt
(``Executor.run``), its own result under its own id (as Celery stores a task's), its
batch count and its metrics. The bundle stores no result of its own.

- Results are written (with their batch counts) in one round trip for every job
  finished since the last write, at most ``WRITE_EVERY_S`` after it: at once after a
  slow job, together for quick ones.
- A job that must run again (a backoff, a pause, a token renewal) leaves the bundle:
  it is sent as a message of its own, parked until due, and marked as handed off
  (``worker.handoff``); the bundle goes on with its next job.
- A redelivered bundle (its worker died before acknowledging it) skips the jobs that
  finished or left before.
- On a warm shutdown the bundle stops after the job it is running and sends the rest
  back to the queue as a new bundle, so a stopping worker waits for one job, not for
  every job of every bundle it holds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery import Task
from celery.signals import worker_shutting_down
from celery.states import FAILURE, SUCCESS

from worker import metrics
from worker.app import app
from worker.batchcount import FAILED, SUCCEEDED
from worker.crashpoint import crash_point
from worker.errors import JobFailed
from worker.executor import Done, JobContext, RunAgain, Spent
from worker.jobs import BUNDLE_TASK_NAME, TASK_NAME
from worker.lua import execute_idempotent, queue, script
from worker.runtime import runtime
from worker.tasks import broker_countdown, flower_view, publish_next_page, run_again_reason, stored

log = logging.getLogger("reqworker.bundle")

#: Set when this worker begins a warm shutdown: bundles then hand their rest back.
_stopping = threading.Event()


@worker_shutting_down.connect
def _hand_back_on_shutdown(**_: Any) -> None:
    _stopping.set()


def _entries(jobs: Any) -> list[tuple[str, Any]]:
    """The (job id, job) pairs of a bundle's message; an entry without an id cannot be run."""
    if not isinstance(jobs, list):
        log.error("a bundle whose jobs are a %s, not a list: nothing to run", type(jobs).__name__)
        return []
    entries = [(e["id"], e.get("job")) for e in jobs
               if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]]
    if len(entries) < len(jobs):
        log.error("%d entries of a bundle have no job id: they cannot be run", len(jobs) - len(entries))
    return entries


def _settled(task: Task, entries: Sequence[tuple[str, Any]], batch_id: str | None) -> set[str]:
    """Jobs of a redelivered bundle that finished or left before; finished ones are counted."""
    ids = [job_id for job_id, _ in entries]
    found = runtime().handoffs.settled(ids, [task.backend.get_key_for_task(i) for i in ids])
    jobs = dict(entries)
    for job_id, state in found.items():
        if state != "HANDED":
            stored(job_id, {"job": jobs[job_id], "batch_id": batch_id}, ok=state == SUCCESS)
    if found:
        log.warning("bundle %s came again: %d of its %d jobs were settled before, not run again",
                    task.request.id, len(found), len(entries))
    return set(found)


def _hand_back(task: Task, rest: Sequence[tuple[str, Any]], batch_id: str | None) -> None:
    """Send the jobs not yet run back to the queue, as a bundle of their own."""
    jobs = [{"id": job_id, "job": job} for job_id, job in rest]
    shown = json.dumps({"jobs": len(jobs), "ids": [job_id for job_id, _ in rest], "batch_id": batch_id})
    task.app.send_task(BUNDLE_TASK_NAME, kwargs={"jobs": jobs, "batch_id": batch_id}, kwargsrepr=shown)
    log.info("bundle %s: worker stopping, %d jobs back to the queue", task.request.id, len(jobs))


#: Results of a bundle's quick jobs are written together, at most this long after the
#: bundle's last write; a job slower than this has its result written at once.
WRITE_EVERY_S = 0.2


class _Results:
    """The results of a bundle's finished jobs, and their batch counts, written together.

    A result is written (and published, for ``AsyncResult.get``) unless the job has a
    finished one already, as ``worker.resultstore`` keeps it; then the batch counts the
    job. One pipeline carries every job finished since the last write, retried as
    Celery retries a result. A worker that dies first loses only results not yet
    written; their jobs, safe to send twice, run again when the bundle comes back.
    """

    def __init__(self, task: Task, batch_id: str | None) -> None:
        self.task = task
        self.batch_id = batch_id
        self.pending: list[tuple[str, str, str]] = []
        self.last = time.monotonic()

    def add(self, job_id: str, job: Any, record: dict[str, Any], *, ok: bool) -> None:
        metrics.ended(job, succeeded=ok)
        backend = self.task.backend
        state = SUCCESS if ok else FAILURE
        result = backend.encode_result(record if ok else JobFailed(record), state)
        meta = backend._get_result_meta(result=result, state=state, traceback=None, request=None)
        # The job's own, not the bundle's: pages and retries the bundle sent are no children of it.
        meta.update(task_id=job_id, children=[])
        self.pending.append((job_id, backend.encode(meta), SUCCEEDED if ok else FAILED))
        if not ok:
            log.info("job %s failed: %s", job_id, JobFailed(record))
        if time.monotonic() - self.last >= WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        if not self.pending:
            return
        backend, rt, pending = self.task.backend, runtime(), list(self.pending)
        client = rt.counters.client
        keep = script(client, "resultstore_store.lua")

        def pipeline() -> Any:
            pipe = client.pipeline(transaction=False)
            for job_id, value, counted in pending:
                queue(pipe, keep, [backend.get_key_for_task(job_id)], [value, int(backend.expires or 0)])
                if self.batch_id:
                    rt.counters.queue_count(pipe, self.batch_id, job_id, counted)
            return pipe

        # Both scripts may run twice: the result is kept if there is one, a count is counted once.
        backend.ensure(execute_idempotent, (pipeline, client, keep, rt.counters.move_script))
        self.pending.clear()
        self.last = time.monotonic()
        crash_point("bundle-after-write", pending[0][0])


def _run_again_alone(task: Task, job_id: str, job: Any, batch_id: str | None, again: RunAgain,
                     ctx: JobContext, results: _Results) -> None:
    """The job leaves its bundle: a message of its own, due after the countdown."""
    kwargs = {"job": job, "batch_id": batch_id, "progress": again.spent.to_message()}
    try:
        task.app.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id,
                           countdown=broker_countdown(again.countdown_s) or None,
                           kwargsrepr=flower_view(job, batch_id))
    except Exception as exc:  # the broker refused: the job fails, its batch still finishes
        why_not = f"the retry could not be scheduled ({type(exc).__name__}); last: {again.reason}"
        results.add(job_id, job, runtime().executor.unschedulable(job, again.spent, ctx, why_not), ok=False)
        return
    rt = runtime()
    rt.handoffs.mark(job_id)
    if batch_id:
        (rt.counters.retrying if again.backoff else rt.counters.waiting)(batch_id, job_id)
    log.info("job %s leaves bundle %s to run again alone", job_id, task.request.id)
    run_again_reason(job_id, job, again)


def run_one(task: Task, job_id: str, job: Any, batch_id: str | None, results: _Results) -> None:
    """One job of a bundle: an attempt, then its result, or the job sent to run again."""
    ctx = JobContext(job_id=job_id, batch_id=batch_id)
    outcome = runtime().executor.run(job, Spent(), ctx)
    if isinstance(outcome, Done):
        results.add(job_id, job, outcome.record, ok=True)
        if outcome.next_job is not None:
            # Not written before the page is out, as a single job's; but at once after it:
            # run again, the job would send its next page a second time.
            publish_next_page(task, outcome.next_job, batch_id)
            results.write()
    elif isinstance(outcome, RunAgain):
        _run_again_alone(task, job_id, job, batch_id, outcome, ctx, results)
    else:
        results.add(job_id, job, outcome.record, ok=False)


@app.task(bind=True, name=BUNDLE_TASK_NAME, acks_late=True, ignore_result=True)
def bundle(self: Task, jobs: Any, batch_id: str | None = None) -> int:
    """Run the jobs of one message in order; returns how many it ran."""
    entries = _entries(jobs)
    redelivered = (self.request.delivery_info or {}).get("redelivered")
    settled = _settled(self, entries, batch_id) if redelivered else set()
    ran = 0
    results = _Results(self, batch_id)
    try:
        for index, (job_id, job) in enumerate(entries):
            if job_id in settled:
                continue
            if _stopping.is_set():
                results.write()
                _hand_back(self, [e for e in entries[index:] if e[0] not in settled], batch_id)
                break
            run_one(self, job_id, job, batch_id, results)
            ran += 1
    finally:
        results.write()
    return ran
