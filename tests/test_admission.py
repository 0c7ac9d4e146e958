"""The gate before each attempt: reserve and sleep briefly, or go back to the queue."""

from __future__ import annotations

import pytest

from tests.support.admission import NOW, PROFILE, FakeLimiter, gate
from worker.admission import EARLY_S, LATE_S, RESERVE_HORIZON_S, Gate, Pass, Refused, Wait
from worker.durations import parse_rate
from worker.profiles import Profile
from worker.ratelimit import RateDecision


def test_a_free_slot_goes_at_once() -> None:
    slept: list[float] = []
    limiter = FakeLimiter([RateDecision(0.0, False, True)])
    assert gate(limiter, slept).enter(PROFILE) == Pass(None)
    assert slept == []
    assert limiter.reserve_asked == [RESERVE_HORIZON_S]


def test_a_reserved_slot_is_slept_for_then_goes_without_asking_again() -> None:
    slept: list[float] = []
    limiter = FakeLimiter([RateDecision(0.3, False, True)])
    assert gate(limiter, slept).enter(PROFILE) == Pass(None)
    assert slept == [0.3]


def test_a_job_woken_too_late_for_its_reserved_slot_asks_for_a_new_one() -> None:
    """A worker short of CPU wakes the job late: sent then, its request would add to a later
    second's, bunched with the requests of the slots after it."""
    clock = [NOW]

    def oversleep(seconds: float) -> None:
        clock[0] += seconds + LATE_S + 0.01

    limiter = FakeLimiter([RateDecision(0.3, False, True), RateDecision(0.0, False, True)])
    ticket = Gate(limiter, sleep=oversleep, clock=lambda: clock[0]).enter(PROFILE)  # type: ignore[arg-type]
    assert ticket == Pass(None)
    assert limiter.reserve_asked == [RESERVE_HORIZON_S, RESERVE_HORIZON_S]


def test_a_job_woken_a_little_late_for_its_reserved_slot_goes() -> None:
    clock = [NOW]

    def oversleep(seconds: float) -> None:
        clock[0] += seconds + LATE_S - 0.01

    limiter = FakeLimiter([RateDecision(0.3, False, True)])
    ticket = Gate(limiter, sleep=oversleep, clock=lambda: clock[0]).enter(PROFILE)  # type: ignore[arg-type]
    assert ticket == Pass(None)
    assert limiter.reserve_asked == [RESERVE_HORIZON_S]


def test_a_pause_that_began_during_the_sleep_sends_the_job_back() -> None:
    slept: list[float] = []
    limiter = FakeLimiter([RateDecision(0.3, False, True)], pause_after_sleep_s=4.0)
    ticket = gate(limiter, slept).enter(PROFILE)
    assert isinstance(ticket, Wait)
    assert ticket.seconds == 4.0
    assert "paused" in ticket.reason


def test_a_slot_reserved_further_ahead_waits_in_redis_and_comes_back_just_before_it() -> None:
    slept: list[float] = []
    ticket = gate(FakeLimiter([RateDecision(2.5, False, True)]), slept).enter(PROFILE)
    assert isinstance(ticket, Wait)
    assert ticket.slot_at == NOW + 2.5
    assert ticket.seconds == pytest.approx(2.5 - EARLY_S)
    assert slept == []


def test_a_job_back_for_its_reserved_slot_sleeps_until_it_without_asking_again() -> None:
    slept: list[float] = []
    limiter = FakeLimiter([])
    assert gate(limiter, slept).enter(PROFILE, slot_at=NOW + 0.3) == Pass(None)
    assert limiter.reserve_asked == []
    assert slept == [pytest.approx(0.3)]


def test_a_job_back_too_early_waits_again_for_the_same_slot() -> None:
    ticket = gate(FakeLimiter([]), []).enter(PROFILE, slot_at=NOW + 5.0)
    assert isinstance(ticket, Wait)
    assert ticket.slot_at == NOW + 5.0


def test_a_job_back_too_late_for_its_slot_asks_for_a_new_one() -> None:
    limiter = FakeLimiter([RateDecision(0.0, False, True)])
    assert gate(limiter, []).enter(PROFILE, slot_at=NOW - LATE_S - 0.01) == Pass(None)
    assert limiter.reserve_asked == [RESERVE_HORIZON_S]


def test_a_job_with_a_reserved_slot_still_waits_for_a_pause() -> None:
    limiter = FakeLimiter([], pause_after_sleep_s=7.0)
    ticket = gate(limiter, []).enter(PROFILE, slot_at=NOW)
    assert isinstance(ticket, Wait)
    assert ticket.slot_at is None
    assert ticket.seconds == 7.0


def test_a_slot_beyond_the_horizon_is_asked_for_again_once_within_reach() -> None:
    ticket = gate(FakeLimiter([RateDecision(3600.0, False, False)]), []).enter(PROFILE)
    assert isinstance(ticket, Wait)
    assert ticket.slot_at is None
    assert ticket.seconds == pytest.approx(3600.0 - RESERVE_HORIZON_S / 2)


def test_a_pause_longer_than_the_profile_allows_fails_the_job() -> None:
    ticket = gate(FakeLimiter([RateDecision(10_000.0, True, False)]), []).enter(PROFILE)
    assert isinstance(ticket, Refused)
    assert "paused for 10000.0 s" in ticket.reason


def test_without_a_rate_limit_only_a_pause_holds_a_job() -> None:
    free = Profile(name="api", base_url="http://x")
    assert gate(FakeLimiter([]), []).enter(free) == Pass(None)
    ticket = gate(FakeLimiter([], pause_after_sleep_s=3.0), []).enter(free)
    assert isinstance(ticket, Wait)
    assert ticket.seconds == 3.0
    assert "paused" in ticket.reason


def test_all_concurrency_slots_taken_means_a_countdown_that_grows_with_each_wait() -> None:
    capped = Profile(name="api", base_url="http://x", concurrency=2)
    seconds = []
    for waits in (0, 1, 2, 10):
        ticket = gate(FakeLimiter([], slots_free=False), []).enter(capped, waits=waits)
        assert isinstance(ticket, Wait)
        assert "2 concurrency slots" in ticket.reason
        seconds.append(ticket.seconds)
    assert seconds == [0.5, 1.0, 2.0, 8.0]


def test_a_held_slot_is_released_when_the_job_goes_back() -> None:
    capped = Profile(name="api", base_url="http://x", concurrency=2, rate_limit=parse_rate("1/s"))
    limiter = FakeLimiter([RateDecision(5.0, False, False)])
    assert isinstance(gate(limiter, []).enter(capped), Wait)
    assert limiter.released == ["slot-1"]
