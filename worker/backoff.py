"""When to try again: the seed's backoff series as a pure policy, with no sleeping."""

from __future__ import annotations

import email.utils
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

#: The HTTP forms of a wait: delay-seconds is digits only (RFC 9110 10.2.3).
_DELAY_SECONDS = re.compile(r"^[0-9]+$")
#: An HTTP date names its weekday and month in English words (IMF-fixdate and the obsolete forms).
_HTTP_DATE = re.compile(r"^[A-Za-z]{3,9}, ?[0-9]{1,2}[ -][A-Za-z]{3}[ -][0-9]{2,4} [0-9:]{8} GMT$"
                        r"|^[A-Za-z]{3} [A-Za-z]{3} +[0-9]{1,2} [0-9:]{8} [0-9]{4}$")
#: Any wait longer than this is "too long" for every profile; it keeps numbers small and finite.
FOREVER_S = 10.0**9
#: The longest countdown of a job waiting for the shared budget (not a backoff): it asks
#: again after this at the latest.
LONGEST_WAIT_S = 86400.0


@dataclass(frozen=True)
class Backoff:
    """The seed's backoff: retry n waits ``start_s * factor ** n``, ``count`` retries at most."""

    start_s: float = 0.5
    factor: float = 1.5
    count: int = 10

    @property
    def final_s(self) -> float:
        """No backoff countdown reaches this (the seed's ``backoff_final``)."""
        return self.start_s * self.factor**self.count

    @property
    def retry_after_max_s(self) -> float:
        """The longest Retry-After a job will wait (the seed's ``timeout``)."""
        return sum(self.start_s * self.factor**i for i in range(self.count + 1))

    @property
    def longest_countdown_s(self) -> float:
        """The longest countdown a job of this profile can ask for."""
        return max(self.final_s, self.retry_after_max_s)


@dataclass(frozen=True)
class GiveUp:
    """The job must not be tried again; ``reason`` says why."""

    reason: str


def countdown(policy: Backoff, retries: int, retry_after_s: float | None = None) -> float | GiveUp:
    """Seconds to wait before retry number ``retries`` (0 for the first), or ``GiveUp``.

    A job makes at most ``policy.count + 1`` attempts. A server's Retry-After is
    honoured as given, up to the seed's ``timeout``; a longer one gives up at once.
    The answer is always finite, between 0 and ``policy.longest_countdown_s``.
    """
    if retry_after_s is not None and not retry_after_s <= policy.retry_after_max_s:
        return GiveUp(
            f"the API asked to wait {retry_after_s:g} s (Retry-After), longer than this "
            f"profile's limit of {policy.retry_after_max_s:g} s"
        )
    if retries >= policy.count:
        return GiveUp(f"max retries exceeded ({policy.count + 1} attempts)")
    wait = retry_after_s if retry_after_s is not None else policy.start_s * policy.factor**retries
    return bounded_countdown(wait, policy.longest_countdown_s)


def bounded_countdown(seconds: float, longest_s: float) -> float:
    """``seconds`` as a countdown Celery can schedule: finite, from 0 up to ``longest_s``."""
    if not math.isfinite(seconds) or seconds < 0:
        return 0.0 if not seconds > 0 else longest_s
    return min(seconds, longest_s)


def parse_delay_seconds(value: str | None) -> float | None:
    """A count of seconds written as digits only, else None; a huge count becomes ``FOREVER_S``."""
    if value is None:
        return None
    value = value.strip()
    if not _DELAY_SECONDS.match(value):
        return None
    # Python refuses to turn thousands of digits into an int; such a wait is forever anyway.
    return FOREVER_S if len(value) > 10 else min(float(int(value)), FOREVER_S)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for, or None when it is not one of the HTTP forms.

    Only delay-seconds (digits) and an HTTP date count; "1e300", "nan", "-5", "inf" and
    anything else are as if the header were absent. The answer is finite and at least 0.
    """
    if value is None:
        return None
    value = value.strip()
    seconds = parse_delay_seconds(value)
    if seconds is not None:
        return seconds
    if len(value) > 64 or not _HTTP_DATE.match(value):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return min(max((when - now).total_seconds(), 0.0), FOREVER_S)
