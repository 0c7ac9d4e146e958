"""Exceptions a job run ends with, as Celery stores and Flower shows them."""

from __future__ import annotations

from typing import Any

#: Characters of an error message shown in logs and Flower (the record keeps it whole).
MESSAGE_SHOWN = 300


class JobFailed(Exception):
    """A job failed for good; its only argument is the JSON result record."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record)
        self.record = record

    def __str__(self) -> str:
        error = self.record.get("error") or {}
        status = error.get("status_code")
        code = f" {status}" if status else ""
        message = str(error.get("message", ""))
        # Shown in the worker log and Flower: a whole error body must not land there.
        if len(message) > MESSAGE_SHOWN:
            message = message[:MESSAGE_SHOWN] + "…"
        return f"{error.get('type', 'Error')}{code}: {message}"

    def __repr__(self) -> str:
        return f"JobFailed({self})"


class RetryLater(Exception):
    """Why a job was put back on the queue with a countdown."""


class WaitLater(RetryLater):
    """What a job waits for (the rate budget, a concurrency slot, a pause): no attempt spent."""


class AuthError(Exception):
    """The profile's credentials could not be had; ``retryable`` when that may pass."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
