"""The fleet-wide rate limiter: one budget, pause and concurrency cap per API profile, kept in Redis.

Every decision is one Lua script (``ratelimit_*.lua``, each run after
``ratelimit_clock.lua``) run on the Redis server, timed by the server's own clock
(``TIME``), so workers on hosts with skewed clocks share one budget and never race each
other with a read-modify-write. ``worker.gcra`` is the admit script's arithmetic in
Python; ``worker.rateheaders`` reads what an API's headers say about its budget.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import redis

from worker.gcra import MICROS_PER_S, available_now, emission_interval_us, gcra_step, rate_text
from worker.keys import Keys
from worker.lua import script
from worker.profiles import Profile
from worker.rateheaders import parse_ratelimit_headers

#: No pause is ever set for longer than this, whatever asks for it (a profile's own cap,
#: the seed's ``timeout``, is applied by ``worker.admission.Gate.after``).
MAX_PAUSE_S = 86400.0
#: Runs before each of the limiter's scripts: the clock they share.
_CLOCK = "ratelimit_clock.lua"


class RateDecision(NamedTuple):
    """The limiter's answer: seconds to wait, whether a pause is why, whether a slot is held."""

    wait_s: float
    paused: bool
    #: The request's slot is taken: go after ``wait_s`` without asking again.
    reserved: bool = False


def _now_arg(now_s: float | None) -> str:
    return "" if now_s is None else str(round(now_s * MICROS_PER_S))


class RateLimiter:
    """Each API profile's shared rate budget, pause and in-flight cap, for the whole fleet.

    ``now_s`` arguments exist for tests; in service leave them out so that the Redis
    server's clock decides. An injected time should not lag the server's clock: keys
    expire at the stored times as the server counts them.
    """

    def __init__(self, client: redis.Redis[bytes], keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._admit = script(client, _CLOCK, "ratelimit_admit.lua")
        self._pause = script(client, _CLOCK, "ratelimit_pause.lua")
        self._acquire = script(client, _CLOCK, "ratelimit_acquire.lua")
        self._status = script(client, _CLOCK, "ratelimit_status.lua")

    def admit(self, profile: Profile, now_s: float | None = None) -> float:
        """Seconds to wait before a request to ``profile`` may go; 0.0 means go now.

        A 0.0 has consumed one request of the shared budget; a wait consumed nothing.
        """
        return self.decide(profile, now_s).wait_s

    def decide(
        self, profile: Profile, now_s: float | None = None, *, reserve_s: float = 0.0
    ) -> RateDecision:
        """Like ``admit``, also saying whether the wait is a fleet-wide pause.

        With ``reserve_s``, a slot due within that many seconds is taken for the caller
        (``reserved``): it waits ``wait_s`` and then goes, with no second ask. Waiting
        threads so queue up for successive slots instead of racing for the next one.
        """
        rate = profile.rate_limit
        interval = emission_interval_us(rate, profile.rate_margin) if rate else 0
        keys = [self.keys.rate(profile.name), self.keys.pause(profile.name)]
        args = [interval, profile.rate_burst, _now_arg(now_s), math.floor(reserve_s * MICROS_PER_S)]
        wait_us, paused, reserved = self._admit(keys=keys, args=args)
        return RateDecision(int(wait_us) / MICROS_PER_S, bool(int(paused)), bool(int(reserved)))

    def pause(self, profile_name: str, seconds: float, now_s: float | None = None) -> float:
        """Hold every request to a profile for ``seconds``; returns the pause now in force.

        A longer pause already set is kept: a second, shorter Retry-After must not let
        the fleet loose early. A wait that is not a finite number sets nothing, and no
        pause is longer than ``MAX_PAUSE_S``: the key always expires.
        """
        if not math.isfinite(seconds) or seconds < 0:
            seconds = 0.0
        args = [math.ceil(min(seconds, MAX_PAUSE_S) * MICROS_PER_S), _now_arg(now_s)]
        return int(self._pause(keys=[self.keys.pause(profile_name)], args=args)) / MICROS_PER_S

    def paused_for(self, profile_name: str, now_s: float | None = None) -> float:
        """Seconds the profile stays paused (0.0 when it is not)."""
        return self.pause(profile_name, 0.0, now_s)

    def pause_left(self, profile_name: str) -> float:
        """``paused_for`` in one plain read, for every job's path: the pause key expires
        exactly when the pause ends, so its time to live is the pause left."""
        left_ms = self.client.pttl(self.keys.pause(profile_name))
        return max(int(left_ms), 0) / 1000

    def try_acquire_slot(
        self, profile: Profile, lease_s: float, now_s: float | None = None
    ) -> str | None:
        """A token for one of ``profile.concurrency`` in-flight slots, or None when all are taken.

        The slot is a lease: a worker that dies holding it frees it after ``lease_s``.
        Without a cap every caller gets a token and nothing is stored.
        """
        token = uuid.uuid4().hex
        if profile.concurrency is None:
            return token
        args = [token, profile.concurrency, max(1, math.ceil(lease_s * MICROS_PER_S)), _now_arg(now_s)]
        leased = self._acquire(keys=[self.keys.inflight(profile.name)], args=args)
        return token if int(leased) else None

    def release_slot(self, profile_name: str, token: str) -> None:
        """Give back a slot from ``try_acquire_slot`` (a lapsed or uncapped token is a no-op)."""
        self.client.zrem(self.keys.inflight(profile_name), token)

    def observe(
        self, profile: Profile, headers: Mapping[str, str], now_s: float | None = None
    ) -> float | None:
        """Pause an adaptive profile when its API says no requests remain; returns that pause.

        Acting on ``Remaining: 0`` before the API answers 429 saves the fleet a wave of
        refused requests. A response without a reset says nothing about how long to wait.
        """
        if not profile.adaptive_rate:
            return None
        remaining, reset_s = parse_ratelimit_headers(headers, time.time() if now_s is None else now_s)
        if remaining != 0 or not reset_s:
            return None
        # The fleet waits no longer than a job would for a Retry-After.
        return self.pause(profile.name, min(reset_s, profile.backoff.retry_after_max_s), now_s)

    def describe(self, profile: Profile, now_s: float | None = None) -> dict[str, Any]:
        """The profile's limiter as a status command shows it (JSON-safe)."""
        keys = [self.keys.rate(profile.name), self.keys.pause(profile.name),
                self.keys.inflight(profile.name)]
        raw_now, raw_tat, raw_pause, in_flight = self._status(keys=keys, args=[_now_arg(now_s)])
        now = int(raw_now)
        tat = int(raw_tat) if raw_tat else None
        pause_until = int(raw_pause) if raw_pause else now
        available: int | None = None
        wait_us = 0
        if profile.rate_limit is not None:
            interval = emission_interval_us(profile.rate_limit, profile.rate_margin)
            available = available_now(tat, now, interval, profile.rate_burst)
            wait_us = gcra_step(tat, now, interval, profile.rate_burst).wait_us
        return {
            "profile": profile.name,
            "rate": rate_text(profile.rate_limit),
            "burst": profile.rate_burst,
            "available": available,
            "wait_s": wait_us / MICROS_PER_S,
            "paused_s": max(pause_until - now, 0) / MICROS_PER_S,
            "in_flight": int(in_flight),
            "concurrency": profile.concurrency,
            "adaptive": profile.adaptive_rate,
        }
