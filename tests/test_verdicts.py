"""Which answers and errors are retried, fail at once, or ask for new credentials."""

from __future__ import annotations

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from worker.verdicts import Verdict, api_message, classify_exception, classify_status, retryable_status


@pytest.mark.parametrize("status", [200, 201, 204, 301, 302, 304])
def test_2xx_and_unfollowed_3xx_succeed(status: int) -> None:
    assert classify_status(status, "GET") is Verdict.SUCCESS


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_answers_are_retried(status: int) -> None:
    assert classify_status(status, "GET") is Verdict.RETRY


def test_the_retryable_statuses_are_the_transient_4xx_and_every_5xx() -> None:
    """One rule for an API's answers and a token endpoint's (``worker.oauth``)."""
    assert {status for status in range(100, 700) if retryable_status(status)} == {
        408, 425, 429, *range(500, 600)}


@pytest.mark.parametrize("status", [400, 403, 404, 405, 409, 410, 422])
def test_other_4xx_fail_at_once(status: int) -> None:
    assert classify_status(status, "GET") is Verdict.FAIL


def test_401_asks_for_new_credentials() -> None:
    assert classify_status(401, "GET") is Verdict.REAUTH


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_post_is_retried_only_when_the_server_did_not_act(method: str) -> None:
    assert classify_status(429, method) is Verdict.RETRY
    assert classify_status(503, method) is Verdict.RETRY
    assert classify_status(500, method) is Verdict.FAIL
    assert classify_status(500, method, retry_unsafe=True) is Verdict.RETRY
    assert classify_status(500, "PUT") is Verdict.RETRY


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/x", reason))  # type: ignore[arg-type]


def _reset() -> requests.ConnectionError:
    return requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))


def test_connection_errors_and_timeouts_are_retried_for_get() -> None:
    for exc in (_refused(), _reset(), requests.ReadTimeout(), requests.ConnectTimeout()):
        assert classify_exception(exc, "GET") is Verdict.RETRY


def test_post_after_an_ambiguous_failure_is_not_retried() -> None:
    assert classify_exception(_reset(), "POST") is Verdict.FAIL
    assert classify_exception(requests.ReadTimeout(), "PATCH") is Verdict.FAIL
    assert classify_exception(_reset(), "POST", retry_unsafe=True) is Verdict.RETRY


def test_post_is_retried_when_nothing_was_sent() -> None:
    assert classify_exception(_refused(), "POST") is Verdict.RETRY
    assert classify_exception(requests.ConnectTimeout(), "POST") is Verdict.RETRY


def test_tls_and_other_request_errors_fail() -> None:
    assert classify_exception(requests.exceptions.SSLError(), "GET") is Verdict.FAIL
    assert classify_exception(requests.TooManyRedirects(), "GET") is Verdict.FAIL


def test_api_message_prefers_the_apis_own_words() -> None:
    assert api_message({"error": {"status": 404, "message": "track not found"}}, "Not Found") == (
        "track not found"
    )
    assert api_message({"error": "invalid_grant"}, "Bad Request") == "invalid_grant"
    assert api_message({"message": "nope"}, "Bad Request") == "nope"
    assert api_message("plain text", "Not Found") == "Not Found"
    assert api_message(None, "") == "no reason given"
