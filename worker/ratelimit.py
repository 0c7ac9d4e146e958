"""The fleet-wide rate limiter: one budget, pause and concurrency cap per API profile, kept in Redis.

Every decision is one Lua script run on the Redis server, timed by the server's own
clock (``TIME``), so workers on hosts with skewed clocks share one budget and never
race each other with a read-modify-write. Times are whole microseconds on both sides:
exact in Lua's doubles, so the Python mirror (``gcra_step``) and the script agree.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import redis

from worker.durations import Rate
from worker.keys import Keys
from worker.profiles import Profile

#: Microseconds in a second: the unit of every time the scripts store.
US = 1_000_000
#: A ``Reset`` above this is an epoch timestamp in seconds, not a delta.
EPOCH_S_FLOOR = 1e9
#: A ``Reset`` above this is an epoch timestamp in milliseconds.
EPOCH_MS_FLOOR = 1e12
#: No pause is ever set for longer than this, whatever asks for it (a profile's own cap,
#: the seed's ``timeout``, is applied by ``worker.admission.Gate.after``).
MAX_PAUSE_S = 86400.0
#: A number in a rate-limit header: digits, perhaps a decimal part; "1e300", "nan" and
#: "-1" are not numbers an API sends, so they count as absent.
_HEADER_NUMBER = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,6})?$")

# The clock every script uses: the caller's (tests) when given, else the server's.
_CLOCK = """
local function now_us(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function keep_until(key, until_us)
  redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(until_us / 1000)))
end
"""

# KEYS: rate, pause. ARGV: interval_us (0 = no rate limit), burst, now_us or '', reserve_us.
# Returns {microseconds to wait, 1 when the wait is a pause, 1 when the slot is taken}.
# A slot at most reserve_us ahead is taken (reserved) for the caller, who then waits
# for it and goes without asking again; a later slot takes nothing.
_ADMIT = _CLOCK + """
local now = now_us(ARGV[3])
local got = redis.call('MGET', KEYS[2], KEYS[1])
local paused = tonumber(got[1])
if paused and paused > now then return {paused - now, 1, 0} end
local interval = tonumber(ARGV[1])
if interval <= 0 then return {0, 0, 1} end
local burst = tonumber(ARGV[2])
local tat = tonumber(got[2]) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - interval * burst - now
if wait > tonumber(ARGV[4]) then return {wait, 0, 0} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PXAT',
           string.format('%.0f', math.ceil(new_tat / 1000)))
if wait < 0 then wait = 0 end
return {wait, 0, 1}
"""

# KEYS: pause. ARGV: seconds_us, now_us or ''. Returns the pause now in force (us).
_PAUSE = _CLOCK + """
local now = now_us(ARGV[2])
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= wanted then return math.max(current - now, 0) end
if wanted <= now then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', wanted))
keep_until(KEYS[1], wanted)
return wanted - now
"""

# KEYS: inflight. ARGV: token, cap, lease_us, now_us or ''. Returns 1 when leased.
_ACQUIRE = _CLOCK + """
local now = now_us(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
keep_until(KEYS[1], tonumber(last[2]))
return 1
"""

# KEYS: rate, pause, inflight. ARGV: now_us or ''. Read-only snapshot for ``describe``.
_STATUS = _CLOCK + """
local now = now_us(ARGV[1])
return {string.format('%.0f', now), redis.call('GET', KEYS[1]) or '',
        redis.call('GET', KEYS[2]) or '',
        redis.call('ZCOUNT', KEYS[3], string.format('(%.0f', now), '+inf')}
"""


class Admission(NamedTuple):
    """The limiter's answer: seconds to wait, whether a pause is why, whether a slot is held."""

    wait_s: float
    paused: bool
    #: The request's slot is taken: go after ``wait_s`` without asking again.
    reserved: bool = False


class GcraStep(NamedTuple):
    """One GCRA decision: whether the request goes, the new TAT, and the wait if it does not."""

    allowed: bool
    tat_us: int
    wait_us: int


def emission_interval_us(rate: Rate, margin: float = 0.0) -> int:
    """Microseconds between requests at a steady ``rate``, less a ``margin`` (at least 1)."""
    return max(1, round(rate.period_s * US / (rate.count * (1.0 - margin))))


def gcra_step(tat_us: int | None, now_us: int, interval_us: int, burst: int) -> GcraStep:
    """The arithmetic of the admit script: GCRA with room for ``burst`` requests at once.

    ``tat_us`` is the theoretical arrival time stored in Redis (None when the key is gone).
    A refusal leaves the TAT as it was, so waiting costs no budget.
    """
    tat = now_us if tat_us is None else max(tat_us, now_us)
    new_tat = tat + interval_us
    allow_at = new_tat - interval_us * burst
    if allow_at > now_us:
        return GcraStep(False, tat, allow_at - now_us)
    return GcraStep(True, new_tat, 0)


def available_now(tat_us: int | None, now_us: int, interval_us: int, burst: int) -> int:
    """Requests that could go at once, read from a TAT without consuming any."""
    if tat_us is None or tat_us <= now_us:
        return burst
    room = (now_us - (tat_us - interval_us * burst)) // interval_us
    return max(0, min(burst, room))


def rate_text(rate: Rate | None) -> str | None:
    """A rate as a person writes it in ``apis.toml``: "10/s", "600/m", "5/2s"."""
    if rate is None:
        return None
    units = {1.0: "s", 60.0: "m", 3600.0: "h", 86400.0: "d"}
    period = units.get(rate.period_s, f"{rate.period_s:g}s")
    return f"{rate.count:g}/{period}"


def parse_ratelimit_headers(
    headers: Mapping[str, str], now_s: float
) -> tuple[int | None, float | None]:
    """Remaining requests and seconds to reset from an API's rate-limit headers.

    Reads ``RateLimit-Remaining``/``-Reset``, the ``X-RateLimit-`` variants and the
    combined ``RateLimit: remaining=0, reset=30`` (or ``r=0;t=30``) header. A reset above
    ~1e9 is an epoch timestamp (GitHub's style), not a delta.
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    remaining = _first_number(lower, ("ratelimit-remaining", "x-ratelimit-remaining"))
    reset = _first_number(lower, ("ratelimit-reset", "x-ratelimit-reset"))
    if "ratelimit" in lower:
        fields = _combined_fields(lower["ratelimit"])
        remaining = remaining if remaining is not None else fields.get("remaining", fields.get("r"))
        reset = reset if reset is not None else fields.get("reset", fields.get("t"))
    if reset is not None:
        if reset > EPOCH_MS_FLOOR:
            reset = reset / 1000.0 - now_s
        elif reset > EPOCH_S_FLOOR:
            reset = reset - now_s
        reset = max(reset, 0.0)
    return (None if remaining is None else max(int(remaining), 0)), reset


def _number(text: str) -> float | None:
    # Draft headers may list several windows ("0, 100;w=60"): the first is the binding one.
    head = text.split(",")[0].split(";")[0].strip().strip('"')
    return float(head) if _HEADER_NUMBER.match(head) else None


def _first_number(lower: Mapping[str, str], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in lower and (value := _number(lower[name])) is not None:
            return value
    return None


def _combined_fields(text: str) -> dict[str, float]:
    fields: dict[str, float] = {}
    for part in text.replace(";", ",").split(","):
        name, sep, value = part.partition("=")
        number = _number(value) if sep else None
        if number is not None:
            fields.setdefault(name.strip().lower(), number)
    return fields


def _now_arg(now_s: float | None) -> str:
    return "" if now_s is None else str(round(now_s * US))


class RateLimiter:
    """Admission to each API profile for the whole fleet: rate, pauses and in-flight cap.

    ``now_s`` arguments exist for tests; in service leave them out so that the Redis
    server's clock decides. An injected time should not lag the server's clock: keys
    expire at the stored times as the server counts them.
    """

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._admit = client.register_script(_ADMIT)
        self._pause = client.register_script(_PAUSE)
        self._acquire = client.register_script(_ACQUIRE)
        self._status = client.register_script(_STATUS)

    def admit(self, profile: Profile, now_s: float | None = None) -> float:
        """Seconds to wait before a request to ``profile`` may go; 0.0 means go now.

        A 0.0 has consumed one request of the shared budget; a wait consumed nothing.
        """
        return self.admission(profile, now_s).wait_s

    def admission(
        self, profile: Profile, now_s: float | None = None, *, reserve_s: float = 0.0
    ) -> Admission:
        """Like ``admit``, also saying whether the wait is a fleet-wide pause.

        With ``reserve_s``, a slot due within that many seconds is taken for the caller
        (``reserved``): it waits ``wait_s`` and then goes, with no second ask. Waiting
        threads so queue up for successive slots instead of racing for the next one.
        """
        rate = profile.rate_limit
        interval = emission_interval_us(rate, profile.rate_margin) if rate else 0
        keys = [self.keys.rate(profile.name), self.keys.pause(profile.name)]
        args = [interval, profile.rate_burst, _now_arg(now_s), math.floor(reserve_s * US)]
        wait_us, paused, reserved = self._admit(keys=keys, args=args)
        return Admission(int(wait_us) / US, bool(int(paused)), bool(int(reserved)))

    def pause(self, profile_name: str, seconds: float, now_s: float | None = None) -> float:
        """Hold every request to a profile for ``seconds``; returns the pause now in force.

        A longer pause already set is kept: a second, shorter Retry-After must not let
        the fleet loose early. A wait that is not a finite number sets nothing, and no
        pause is longer than ``MAX_PAUSE_S``: the key always expires.
        """
        if not math.isfinite(seconds) or seconds < 0:
            seconds = 0.0
        args = [math.ceil(min(seconds, MAX_PAUSE_S) * US), _now_arg(now_s)]
        return int(self._pause(keys=[self.keys.pause(profile_name)], args=args)) / US

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
        args = [token, profile.concurrency, max(1, math.ceil(lease_s * US)), _now_arg(now_s)]
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
            "wait_s": wait_us / US,
            "paused_s": max(pause_until - now, 0) / US,
            "in_flight": int(in_flight),
            "concurrency": profile.concurrency,
            "adaptive": profile.adaptive_rate,
        }
