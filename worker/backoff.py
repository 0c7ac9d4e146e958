"""When to try again: the seed's backoff series as a pure policy, with no sleeping."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.profiles import Backoff


@dataclass(frozen=True)
class GiveUp:
    """The job must not be tried again; ``reason`` says why."""

    reason: str


def countdown(policy: Backoff, retries: int, retry_after_s: float | None = None) -> float | GiveUp:
    """Seconds to wait before retry number ``retries`` (0 for the first), or ``GiveUp``.

    A job makes at most ``policy.count + 1`` attempts. A server's Retry-After is
    honoured as given, up to the seed's ``timeout``; a longer one gives up at once.
    """
    if retry_after_s is not None and retry_after_s > policy.retry_after_max_s:
        return GiveUp(
            f"the API asked to wait {retry_after_s:g} s (Retry-After), longer than this "
            f"profile's limit of {policy.retry_after_max_s:g} s"
        )
    if retries >= policy.count:
        return GiveUp(f"max retries exceeded ({policy.count + 1} attempts)")
    if retry_after_s is not None:
        return max(retry_after_s, 0.0)
    return policy.start_s * policy.factor**retries


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max((when - now).total_seconds(), 0.0)
