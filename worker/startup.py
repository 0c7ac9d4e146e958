"""Checks made before a worker takes its first job."""

from __future__ import annotations

import math
from collections.abc import Mapping

from worker.profiles import Profile
from worker.settings import Settings

#: Seconds allowed beyond one attempt's timeout for the work around it (reading the
#: job, the rate budget, storing the result) before the message is acknowledged.
ATTEMPT_MARGIN_S = 10.0


class StartupError(RuntimeError):
    """The worker must not start; the message says what to change."""


def longest_attempt_s(profile: Profile) -> float:
    """Seconds one run of a job of this profile may hold its message: one attempt, with room.

    Countdowns wait in Redis, not in a worker (``worker.transport``), and a live worker
    renews the lease of the messages it holds, so nothing longer needs covering.
    """
    return profile.timeout_s + ATTEMPT_MARGIN_S


def check_visibility(settings: Settings, profiles: Mapping[str, Profile]) -> None:
    """Refuse a Redis broker whose visibility timeout one attempt could outlast.

    Should a worker stop renewing its leases (stopped by a debugger or a frozen
    container) while an attempt runs, Redis would hand the message to a second worker.
    """
    if not settings.broker_is_redis:
        return
    for profile in profiles.values():
        hold_s = longest_attempt_s(profile)
        if hold_s > settings.visibility_timeout_s:
            raise StartupError(
                f"profile {profile.name!r}: one attempt may take {profile.timeout_s:g} s "
                f"(its timeout) and, with {ATTEMPT_MARGIN_S:g} s of margin, hold a job for "
                f"{hold_s:g} s, but the broker's visibility timeout is "
                f"{settings.visibility_timeout_s} s: a job could run twice. Raise "
                f"REQWORKER_VISIBILITY_TIMEOUT to {math.ceil(hold_s)} or more, or lower this "
                "profile's timeout."
            )
