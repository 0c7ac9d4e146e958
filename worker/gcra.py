"""The rate limiter's arithmetic in Python: GCRA as the admit script (``ratelimit_admit.lua``) does it.

Times are whole microseconds on both sides: exact in Lua's doubles, so this mirror
and the script agree. ``worker.ratelimit`` uses it to describe a budget without
taking from it.
"""

from __future__ import annotations

from typing import NamedTuple

from worker.durations import Rate

#: Microseconds in a second: the unit of every time the scripts store.
MICROS_PER_S = 1_000_000


class GcraStep(NamedTuple):
    """One GCRA decision: whether the request goes, the new TAT, and the wait if it does not."""

    allowed: bool
    tat_us: int
    wait_us: int


def emission_interval_us(rate: Rate, margin: float = 0.0) -> int:
    """Microseconds between requests at a steady ``rate``, less a ``margin`` (at least 1)."""
    return max(1, round(rate.period_s * MICROS_PER_S / (rate.count * (1.0 - margin))))


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
