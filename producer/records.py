"""Turning what the result backend stored for a job into its JSON result record."""

from __future__ import annotations

import json
from typing import Any

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
    if meta is None:
        return "pending"
    return STATE_NAMES.get(str(meta.get("status")), "pending")


def decode_meta(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return json.loads(raw)


def record_of(entry: dict[str, Any], batch_id: str, meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result record of a finished job, or None while it is not finished.

    ``entry`` is the job's line in the batch (id, key, api, method, url); it fills in
    a record for failures the task itself did not describe (a worker lost, a revoke).
    """
    state = state_of(meta)
    if state not in ("succeeded", "failed") or meta is None:
        return None
    result = meta.get("result")
    if state == "succeeded" and isinstance(result, dict):
        return result
    if isinstance(result, dict) and result.get("exc_type") == "JobFailed":
        args = result.get("exc_message") or []
        if args and isinstance(args[0], dict):
            return args[0]
    if isinstance(result, dict):
        kind = str(result.get("exc_type") or "Error")
        message = result.get("exc_message")
        if isinstance(message, list):
            message = " ".join(str(part) for part in message)
    else:
        kind, message = "Error", str(result)
    return {
        "key": entry.get("key"),
        "job_id": entry.get("id"),
        "batch_id": batch_id,
        "api": entry.get("api"),
        "method": entry.get("method"),
        "url": entry.get("url"),
        "ok": False,
        "status_code": None,
        "body": None,
        "from_cache": False,
        "attempts": None,
        "elapsed_ms": None,
        "error": {"type": kind, "status_code": None, "message": str(message)},
    }
