"""The JSON result record of a finished job, as PRODUCT.md describes it.

Built here only: by the worker for every job it finishes (``worker.executor``), and by
the producer for a job that failed without its task describing it, a worker lost or a
revoke (``producer.records``). Both write the same fields, in the same order.
"""

from __future__ import annotations

from typing import Any

#: An error as a record holds it: its type, the HTTP status (if any), a message.
Error = tuple[str, int | None, str]


def result_record(
    *,
    key: Any,
    job_id: str | None,
    batch_id: str | None,
    api: Any,
    method: Any,
    url: Any,
    status_code: int | None = None,
    body: Any = None,
    from_cache: bool = False,
    attempts: int | None,
    elapsed_ms: float | None,
    page: int | None = None,
    error: Error | None = None,
) -> dict[str, Any]:
    """A job's record: ``ok`` when there is no ``error``; ``page`` only for a paginated job."""
    record: dict[str, Any] = {
        "key": key,
        "job_id": job_id,
        "batch_id": batch_id,
        "api": api,
        "method": method,
        "url": url,
        "ok": error is None,
        "status_code": status_code,
        "body": body,
        "from_cache": from_cache,
        "attempts": attempts,
        "elapsed_ms": elapsed_ms,
    }
    if page is not None:
        record["page"] = page
    if error is not None:
        kind, status, message = error
        record["error"] = {"type": kind, "status_code": status, "message": message}
    return record
