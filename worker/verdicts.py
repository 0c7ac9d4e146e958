"""The verdict on one attempt: it succeeded, may be retried, needs a new token, or failed for good.

Pure classification: it says *whether*, ``worker.backoff`` says *when*.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from worker.jobs import UNSAFE_METHODS


class Verdict(Enum):
    SUCCESS = "success"
    RETRY = "retry"
    REAUTH = "reauth"
    FAIL = "fail"


#: 4xx answers that mean "try again later" rather than "this request is wrong".
RETRYABLE_4XX = frozenset({408, 425, 429})
#: Answers that say the server did not act on the request: safe to repeat a POST.
NOT_PROCESSED = RETRYABLE_4XX | {503}


def retryable_status(status: int) -> bool:
    """Whether an answer of ``status`` may pass if asked again later: a 5xx or a ``RETRYABLE_4XX``.

    The one rule for an API's answers and for a token endpoint's.
    """
    return status in RETRYABLE_4XX or 500 <= status < 600


def classify_status(status: int, method: str, retry_unsafe: bool = False) -> Verdict:
    """What to do with an HTTP answer of ``status`` to a ``method`` request."""
    if 200 <= status < 400:
        return Verdict.SUCCESS
    if status == 401:
        return Verdict.REAUTH
    if retryable_status(status):
        if method in UNSAFE_METHODS and not retry_unsafe and status not in NOT_PROCESSED:
            return Verdict.FAIL
        return Verdict.RETRY
    return Verdict.FAIL


def nothing_was_sent(exc: BaseException) -> bool:
    """True when a request failed before any of it reached the server."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = getattr(exc.args[0] if exc.args else None, "reason", None)
        return isinstance(reason, NewConnectionError)
    return False


def classify_exception(exc: BaseException, method: str, retry_unsafe: bool = False) -> Verdict:
    """What to do when an attempt raised instead of answering."""
    if isinstance(exc, requests.exceptions.SSLError):
        return Verdict.FAIL
    transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    if not isinstance(exc, transient):
        return Verdict.FAIL
    if method in UNSAFE_METHODS and not retry_unsafe and not nothing_was_sent(exc):
        return Verdict.FAIL
    return Verdict.RETRY


def api_message(body: Any, reason: str) -> str:
    """The API's own explanation of an error: ``error.message`` in the body, else the reason."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for candidate in (error, body.get("message"), body.get("error_description")):
            if isinstance(candidate, str) and candidate:
                return candidate
    return reason or "no reason given"
