"""The fleet-wide rate limiter: pure GCRA and header arithmetic, then the scripts on a private Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import eventually
from worker.durations import parse_rate
from worker.gcra import MICROS_PER_S, available_now, emission_interval_us, gcra_step, rate_text
from worker.keys import Keys
from worker.profiles import Profile
from worker.rateheaders import parse_ratelimit_headers
from worker.ratelimit import MAX_PAUSE_S, RateLimiter

NOW_US = 1_700_000_000 * MICROS_PER_S
TENTH_US = 100_000


def profile(rate: str | None = "10/s", burst: int = 1, **extra: object) -> Profile:
    extra.setdefault("rate_margin", 0.0)  # the arithmetic below is at the exact rate
    return Profile(
        name="example",
        base_url="https://api.example.com",
        rate_limit=parse_rate(rate) if rate else None,
        rate_burst=burst,
        **extra,  # type: ignore[arg-type]
    )


def run(steps: int, burst: int, interval_us: int = TENTH_US, now_us: int = NOW_US) -> list[int]:
    """Waits (us) of ``steps`` requests at one instant, carrying the TAT like Redis does."""
    tat: int | None = None
    waits = []
    for _ in range(steps):
        step = gcra_step(tat, now_us, interval_us, burst)
        tat = step.tat_us
        waits.append(step.wait_us)
    return waits


# Pure units: no Redis, no clock.


def test_first_request_goes_at_once_and_second_waits_one_interval() -> None:
    assert run(2, burst=1) == [0, TENTH_US]


def test_burst_of_five_goes_at_once_then_waits_one_interval_more_each() -> None:
    assert run(7, burst=5) == [0, 0, 0, 0, 0, TENTH_US, TENTH_US]


def test_refused_step_consumes_nothing() -> None:
    first = gcra_step(None, NOW_US, TENTH_US, 1)
    refused = gcra_step(first.tat_us, NOW_US, TENTH_US, 1)
    assert not refused.allowed
    assert refused.tat_us == first.tat_us
    later = gcra_step(refused.tat_us, NOW_US + TENTH_US, TENTH_US, 1)
    assert later.allowed
    assert later.wait_us == 0


def test_wait_shrinks_as_time_passes() -> None:
    tat = gcra_step(None, NOW_US, TENTH_US, 1).tat_us
    assert gcra_step(tat, NOW_US + 30_000, TENTH_US, 1).wait_us == 70_000


def test_idle_time_refills_no_more_than_burst() -> None:
    assert run(5, burst=3, now_us=NOW_US + 3600 * MICROS_PER_S) == [0, 0, 0, TENTH_US, TENTH_US]
    tat = gcra_step(None, NOW_US, TENTH_US, 3).tat_us
    assert available_now(tat, NOW_US + 3600 * MICROS_PER_S, TENTH_US, 3) == 3


def test_available_now_counts_what_the_tat_leaves() -> None:
    assert available_now(None, NOW_US, TENTH_US, 5) == 5
    assert available_now(NOW_US + TENTH_US, NOW_US, TENTH_US, 5) == 4
    assert available_now(NOW_US + 5 * TENTH_US, NOW_US, TENTH_US, 5) == 0
    assert available_now(NOW_US + TENTH_US + 50_000, NOW_US + 50_000, TENTH_US, 5) == 4


@pytest.mark.parametrize(
    ("rate", "interval_us", "text"),
    [("10/s", 100_000, "10/s"), ("600/m", 100_000, "600/m"), ("5/2s", 400_000, "5/2s"),
     ("1000/h", 3_600_000, "1000/h"), ("3/s", 333_333, "3/s")],
)
def test_rate_arithmetic_and_text(rate: str, interval_us: int, text: str) -> None:
    assert emission_interval_us(parse_rate(rate)) == interval_us
    assert rate_text(parse_rate(rate)) == text


def test_ietf_headers_give_remaining_and_delta_reset() -> None:
    headers = {"RateLimit-Remaining": "0", "RateLimit-Reset": "30"}
    assert parse_ratelimit_headers(headers, now_s=1000.0) == (0, 30.0)


def test_x_headers_with_epoch_reset_are_read_case_blind() -> None:
    headers = {"x-ratelimit-remaining": "12", "X-RATELIMIT-RESET": "1700000045"}
    assert parse_ratelimit_headers(headers, now_s=1_700_000_000.0) == (12, 45.0)


def test_epoch_reset_in_milliseconds_and_in_the_past() -> None:
    assert parse_ratelimit_headers({"X-RateLimit-Reset": "1700000002500"}, 1_700_000_000.0) == (None, 2.5)
    assert parse_ratelimit_headers({"X-RateLimit-Reset": "1699999990"}, 1_700_000_000.0) == (None, 0.0)


def test_combined_ratelimit_header_and_multi_window_values() -> None:
    assert parse_ratelimit_headers({"RateLimit": "limit=100, remaining=0, reset=7"}, 0.0) == (0, 7.0)
    assert parse_ratelimit_headers({"RateLimit": '"default";r=3;t=9'}, 0.0) == (3, 9.0)
    assert parse_ratelimit_headers({"RateLimit-Remaining": "0, 100;w=60"}, 0.0) == (0, None)


def test_missing_or_garbage_headers_give_nothing() -> None:
    assert parse_ratelimit_headers({}, 0.0) == (None, None)
    bad = {"RateLimit-Remaining": "lots", "RateLimit-Reset": "soon"}
    assert parse_ratelimit_headers(bad, 0.0) == (None, None)


# On a private redis-server. Injected times start an hour ahead of the server's clock:
# keys expire at their stored times by the server's count, so this keeps them for the test.


@pytest.fixture
def new_worker(
    redis_server: LocalRedis, keys: Keys
) -> Iterator[Callable[[], RateLimiter]]:
    """A factory of limiters, each with its own connection: a worker each."""
    conns: list[redis.Redis[bytes]] = []

    def make() -> RateLimiter:
        conns.append(redis.Redis.from_url(redis_server.url))
        return RateLimiter(conns[-1], keys)

    yield make
    for conn in conns:
        conn.close()


@pytest.fixture
def t0(client: redis.Redis[bytes]) -> float:
    seconds, _ = client.time()
    return float(seconds + 3600)


def test_immediate_admits_allow_exactly_burst_then_report_waits(
    new_worker: Callable[[], RateLimiter], t0: float
) -> None:
    limiter = new_worker()
    waits = [limiter.admit(profile("10/s", burst=3), now_s=t0) for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.1], abs=1e-6)


def test_admits_on_the_server_clock_allow_exactly_burst(new_worker: Callable[[], RateLimiter]) -> None:
    # One an hour: nothing refills however slowly this machine runs the test.
    limiter = new_worker()
    waits = [limiter.admit(profile("1/h", burst=3)) for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert all(3500 < w <= 3600 for w in waits[3:])


def test_two_workers_share_one_budget(new_worker: Callable[[], RateLimiter], t0: float) -> None:
    one, two = new_worker(), new_worker()
    p = profile("10/s", burst=4)
    waits = [(one if i % 2 else two).admit(p, now_s=t0) for i in range(8)]
    assert waits.count(0.0) == 4
    assert waits[:4] == [0.0] * 4


def test_refused_admit_consumes_nothing_and_budget_returns_with_time(
    new_worker: Callable[[], RateLimiter], t0: float
) -> None:
    limiter = new_worker()
    p = profile("10/s")
    assert limiter.admit(p, now_s=t0) == 0.0
    for _ in range(10):
        assert limiter.admit(p, now_s=t0 + 0.05) == pytest.approx(0.05, abs=1e-6)
    assert limiter.admit(p, now_s=t0 + 0.1) == 0.0
    assert limiter.admit(p, now_s=t0 + 0.1) == pytest.approx(0.1, abs=1e-6)


def test_rate_state_expires_when_the_profile_is_idle(
    new_worker: Callable[[], RateLimiter], client: redis.Redis[bytes], keys: Keys
) -> None:
    new_worker().admit(profile("1/h"))
    # the expiry is the stored time rounded up to the next millisecond
    assert 0 < client.pttl(keys.rate("example")) <= 3600 * 1000 + 1


def test_profile_without_rate_limit_never_touches_the_rate_key(
    new_worker: Callable[[], RateLimiter], client: redis.Redis[bytes], keys: Keys
) -> None:
    limiter = new_worker()
    assert [limiter.admit(profile(None)) for _ in range(20)] == [0.0] * 20
    assert not client.exists(keys.rate("example"))


def test_pause_blocks_admit_for_every_worker(new_worker: Callable[[], RateLimiter], t0: float) -> None:
    one, two = new_worker(), new_worker()
    assert one.pause("example", 30, now_s=t0) == 30.0
    assert two.admit(profile("10/s", burst=5), now_s=t0) == 30.0
    assert two.admit(profile(None), now_s=t0 + 10) == 20.0
    assert two.paused_for("example", now_s=t0 + 10) == 20.0


def test_pause_is_never_shortened_but_may_be_lengthened(
    new_worker: Callable[[], RateLimiter], t0: float
) -> None:
    limiter = new_worker()
    limiter.pause("example", 60, now_s=t0)
    assert limiter.pause("example", 5, now_s=t0 + 1) == 59.0
    assert limiter.paused_for("example", now_s=t0 + 1) == 59.0
    assert limiter.pause("example", 90, now_s=t0 + 1) == 90.0
    assert limiter.paused_for("example", now_s=t0 + 2) == 89.0


def test_pause_ends_and_admits_resume_after_it(new_worker: Callable[[], RateLimiter], t0: float) -> None:
    limiter = new_worker()
    limiter.pause("example", 30, now_s=t0)
    assert limiter.paused_for("example", now_s=t0 + 30) == 0.0
    assert limiter.admit(profile("10/s"), now_s=t0 + 30) == 0.0


@pytest.mark.parametrize("header", ["1e300", "nan", "inf", "-1", "1e3", "0x10"])
def test_a_reset_that_is_not_a_plain_number_counts_as_absent(header: str) -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": header}
    assert parse_ratelimit_headers(headers, 0.0) == (0, None)


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -5.0])
def test_a_pause_of_no_sensible_length_is_no_pause(
    new_worker: Callable[[], RateLimiter], client: redis.Redis[bytes], keys: Keys, seconds: float
) -> None:
    assert new_worker().pause("example", seconds) == 0.0
    assert client.pttl(keys.pause("example")) == -2  # no pause key at all


def test_a_pause_is_at_most_the_longest_pause_and_always_expires(
    new_worker: Callable[[], RateLimiter], client: redis.Redis[bytes], keys: Keys
) -> None:
    new_worker().pause("example", 1e300)
    assert MAX_PAUSE_S * 1000 - 1000 < client.pttl(keys.pause("example")) <= MAX_PAUSE_S * 1000


def test_pause_on_the_server_clock(
    new_worker: Callable[[], RateLimiter], client: redis.Redis[bytes], keys: Keys
) -> None:
    limiter = new_worker()
    assert limiter.pause_left("example") == 0
    limiter.pause("example", 600)
    assert 0 < limiter.paused_for("example") <= 600
    assert 590 < limiter.pause_left("example") <= 600.001
    assert 0 < client.pttl(keys.pause("example")) <= 600 * 1000 + 1  # rounded up to the ms


def test_concurrency_caps_slots_and_release_frees_one(
    new_worker: Callable[[], RateLimiter], client: redis.Redis[bytes], keys: Keys
) -> None:
    one, two = new_worker(), new_worker()
    p = profile(None, concurrency=2)
    first, second = one.try_acquire_slot(p, 60), two.try_acquire_slot(p, 60)
    assert first
    assert second
    assert first != second
    assert one.try_acquire_slot(p, 60) is None
    assert one.describe(p)["in_flight"] == 2
    two.release_slot("example", second)
    assert two.try_acquire_slot(p, 60) is not None
    assert client.zcard(keys.inflight("example")) == 2


def test_a_lapsed_lease_frees_its_slot(new_worker: Callable[[], RateLimiter]) -> None:
    limiter = new_worker()
    p = profile(None, concurrency=1)
    assert limiter.try_acquire_slot(p, 0.2) is not None
    assert limiter.try_acquire_slot(p, 0.2) is None
    eventually(lambda: limiter.try_acquire_slot(p, 60), within_s=10, what="the lapsed lease's slot")


def test_uncapped_profile_always_gets_a_slot_and_stores_nothing(
    new_worker: Callable[[], RateLimiter], client: redis.Redis[bytes], keys: Keys
) -> None:
    limiter = new_worker()
    tokens = {limiter.try_acquire_slot(profile(None), 60) for _ in range(5)}
    assert None not in tokens
    assert len(tokens) == 5
    assert not client.exists(keys.inflight("example"))


def test_adaptive_observe_pauses_on_remaining_zero(new_worker: Callable[[], RateLimiter], t0: float) -> None:
    one, two = new_worker(), new_worker()
    p = profile("10/s", adaptive_rate=True)
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"}
    assert one.observe(p, headers, now_s=t0) == 30.0
    assert two.admit(p, now_s=t0 + 5) == 25.0


def test_observe_leaves_the_profile_alone_unless_adaptive_and_exhausted(
    new_worker: Callable[[], RateLimiter], t0: float
) -> None:
    limiter = new_worker()
    exhausted = {"RateLimit-Remaining": "0", "RateLimit-Reset": "30"}
    assert limiter.observe(profile("10/s"), exhausted, now_s=t0) is None
    adaptive = profile("10/s", adaptive_rate=True)
    assert limiter.observe(adaptive, {"RateLimit-Remaining": "4", "RateLimit-Reset": "30"}, t0) is None
    assert limiter.observe(adaptive, {"RateLimit-Remaining": "0"}, now_s=t0) is None
    assert limiter.paused_for("example", now_s=t0) == 0.0


def test_describe_reports_budget_pause_and_slots(new_worker: Callable[[], RateLimiter], t0: float) -> None:
    limiter = new_worker()
    p = profile("10/s", burst=5, concurrency=3)
    for _ in range(2):
        limiter.admit(p, now_s=t0)
    limiter.try_acquire_slot(p, 60, now_s=t0)
    limiter.pause("example", 12, now_s=t0)
    assert limiter.describe(p, now_s=t0) == {
        "profile": "example", "rate": "10/s", "burst": 5, "available": 3, "wait_s": 0.0,
        "paused_s": 12.0, "in_flight": 1, "concurrency": 3, "adaptive": False,
    }
    drained = replace(p, name="other")
    for _ in range(5):
        limiter.admit(drained, now_s=t0)
    status = limiter.describe(drained, now_s=t0)
    assert (status["available"], status["wait_s"], status["paused_s"]) == (0, 0.1, 0.0)


def test_the_rate_margin_spaces_requests_a_little_wider(
    new_worker: Callable[[], RateLimiter], t0: float
) -> None:
    limiter = new_worker()
    p = profile("10/s", rate_margin=0.02)
    waits = [limiter.decide(p, now_s=t0, reserve_s=1.0).wait_s for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.1 / 0.98, 0.2 / 0.98], abs=1e-6)


def test_waiting_callers_reserve_successive_slots_up_to_the_horizon(
    new_worker: Callable[[], RateLimiter], t0: float
) -> None:
    one, two = new_worker(), new_worker()
    p = profile("10/s")
    answers = [(one if i % 2 else two).decide(p, now_s=t0, reserve_s=0.35) for i in range(6)]
    reserved = [a for a in answers if a.reserved]
    assert [a.wait_s for a in reserved] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    # beyond the horizon nothing is taken: the next caller is told the same next slot
    assert [a.reserved for a in answers[4:]] == [False, False]
    assert [a.wait_s for a in answers[4:]] == pytest.approx([0.4, 0.4])
