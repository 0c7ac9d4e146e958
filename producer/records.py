"""Turning what the result backend stored for a job into its JSON result record."""

from __future__ import annotations

import json
from typing import Any, cast

from worker.resultrecord import result_record

#: Job states as ``reqworker status`` counts them, by Celery state.
STATE_NAMES = {
    "PENDING": "pending",
    "RECEIVED": "pending",
    "STARTED": "pending",
    "RETRY": "retrying",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


def state_of(meta: dict[str, Any] | None) -> str:
    """pending, retrying, succeeded or failed, from what the backend stored.

    A wait for pacing stores nothing (``worker.resultstore``): only the batch's
    counters know a job is waiting.
    """
    if meta is None:
        return "pending"
    return STATE_NAMES.get(str(meta.get("status")), "pending")


def decode_meta(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return cast("dict[str, Any]", json.loads(raw))


def record_of(entry: dict[str, Any], batch_id: str, meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result record of a finished job, or None while it is not finished.

    ``entry`` is the job's entry in the batch (id, line, job, and ``same_as`` for a
    duplicate answered by another job); it fills in a record for failures the task
    itself did not describe (a worker lost, a revoke).
    """
    state = state_of(meta)
    if state not in ("succeeded", "failed") or meta is None:
        return None
    job = entry.get("job") or {}
    result = meta.get("result")
    record: dict[str, Any] | None = None
    if state == "succeeded" and isinstance(result, dict):
        record = result
    elif isinstance(result, dict) and result.get("exc_type") == "JobFailed":
        args = result.get("exc_message") or []
        if args and isinstance(args[0], dict):
            record = args[0]
    if record is not None:
        if entry.get("same_as"):
            record = {**record, "key": job.get("key")}
        return record
    if isinstance(result, dict):
        kind = str(result.get("exc_type") or "Error")
        message = result.get("exc_message")
        if isinstance(message, list):
            message = " ".join(str(part) for part in message)
    else:
        kind, message = "Error", str(result)
    return result_record(key=job.get("key"), job_id=entry.get("same_as") or entry.get("id"),
                         batch_id=batch_id, api=job.get("api"), method=job.get("method"),
                         url=job.get("url"), attempts=None, elapsed_ms=None,
                         error=(kind, None, str(message)))
