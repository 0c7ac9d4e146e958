"""Checks made before a worker takes its first job."""

from __future__ import annotations

import math
from collections.abc import Mapping

from worker.auth import renewal_lease_s
from worker.profiles import Profile
from worker.settings import Settings

#: Seconds allowed, beyond a job's longest countdown and one attempt, for a due job to
#: find a free slot in its worker.
SLOT_MARGIN_S = 30.0


class StartupError(RuntimeError):
    """The worker must not start; the message says what to change."""


def longest_hold_s(profile: Profile) -> float:
    """Seconds a worker may hold one message of this profile before acknowledging it.

    Its longest countdown, a token renewal it may wait for or make, one attempt, and room.
    """
    renewal_s = renewal_lease_s(profile) if profile.auth.kind == "oauth2" else 0.0
    return profile.backoff.longest_countdown_s + renewal_s + profile.timeout_s + SLOT_MARGIN_S


def check_visibility(settings: Settings, profiles: Mapping[str, Profile]) -> None:
    """Refuse a Redis broker whose visibility timeout a countdown could outlast.

    A message held longer than the timeout is handed to a second worker and runs twice.
    """
    if not settings.broker_is_redis:
        return
    for profile in profiles.values():
        hold_s = longest_hold_s(profile)
        if hold_s >= settings.visibility_timeout_s:
            raise StartupError(
                f"profile {profile.name!r}: a job may wait "
                f"{profile.backoff.longest_countdown_s:.1f} s "
                f"in a countdown and then hold a worker slot, with {SLOT_MARGIN_S:g} s of "
                f"margin, for {hold_s:.1f} s, but the broker's visibility timeout is "
                f"{settings.visibility_timeout_s} s: a job could run twice. Raise "
                f"REQWORKER_VISIBILITY_TIMEOUT to {math.floor(hold_s) + 1} or more, or shorten this "
                "profile's backoff."
            )
