"""The seed's backoff numbers and Retry-After handling, without Celery, Redis or sleeping."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from worker.backoff import Backoff, GiveUp, bounded_countdown, countdown, parse_retry_after

SEED = Backoff(start_s=0.5, factor=1.5, count=10)


def test_seed_defaults_give_the_seeds_final_and_timeout() -> None:
    assert SEED.final_s == pytest.approx(28.83, abs=0.01)
    assert SEED.retry_after_max_s == pytest.approx(85.49, abs=0.01)


def test_countdowns_follow_the_seed_series_then_give_up() -> None:
    waits = [countdown(SEED, n) for n in range(SEED.count)]
    assert waits == pytest.approx([0.5 * 1.5**n for n in range(10)])
    assert all(isinstance(w, float) and w < SEED.final_s for w in waits)
    gave_up = countdown(SEED, SEED.count)
    assert isinstance(gave_up, GiveUp)
    assert "max retries exceeded" in gave_up.reason


def test_a_job_makes_count_plus_one_attempts_at_most() -> None:
    policy = Backoff(start_s=0.1, factor=2, count=3)
    attempts, retries = 0, 0
    while True:
        attempts += 1
        wait = countdown(policy, retries)
        if isinstance(wait, GiveUp):
            break
        retries += 1
    assert attempts == policy.count + 1


def test_retry_after_is_honoured_as_the_countdown() -> None:
    assert countdown(SEED, 0, retry_after_s=2.0) == 2.0
    assert countdown(SEED, 3, retry_after_s=60.0) == 60.0


def test_retry_after_longer_than_timeout_fails_at_once() -> None:
    wait = countdown(SEED, 0, retry_after_s=10000)
    assert isinstance(wait, GiveUp)
    assert "10000" in wait.reason
    assert "85.4" in wait.reason


def test_retry_after_still_spends_an_attempt() -> None:
    assert isinstance(countdown(SEED, SEED.count, retry_after_s=1), GiveUp)


def test_retry_after_in_seconds_and_http_date_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("value", ["1e300", "nan", "inf", "-inf", "-5", "2.5", "0x10", "", "  ",
                                   "Infinity", "1_000", "+3", "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_only_the_http_forms_of_retry_after_count(value: str) -> None:
    assert parse_retry_after(value) is None


def test_a_retry_after_of_thousands_of_digits_is_finite_and_too_long() -> None:
    wait = parse_retry_after("9" * 5000)
    assert wait is not None
    assert math.isfinite(wait)
    assert wait > SEED.retry_after_max_s
    assert isinstance(countdown(SEED, 0, wait), GiveUp)


def test_every_countdown_is_finite_and_within_the_longest_allowed() -> None:
    longest = SEED.longest_countdown_s
    for given in (float("nan"), float("inf"), float("-inf"), -1e12, 1e300, 3.0):
        got = bounded_countdown(given, longest)
        assert math.isfinite(got)
        assert 0 <= got <= longest
    assert bounded_countdown(3.0, longest) == 3.0
    assert isinstance(countdown(SEED, 0, float("nan")), GiveUp)


def test_all_three_http_date_forms_are_read() -> None:
    now = datetime(1994, 11, 6, 8, 49, 7, tzinfo=UTC)
    for value in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                  "Sun Nov  6 08:49:37 1994"):
        assert parse_retry_after(value, now) == 30.0, value
