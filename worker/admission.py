"""Holding a job until its profile's shared rate budget, pause and concurrency cap let it go.

A job that waits here has not failed: waiting spends no attempt. A job whose slot of
the shared budget is due within half a second reserves it and sleeps until then;
longer waits go back to the queue with a countdown, so no worker slot is held for
long, waiting jobs never race each other for the next slot, and nothing spins.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker import metrics
from worker.profiles import Profile
from worker.ratelimit import RateLimiter

#: A slot of the rate budget at most this many seconds ahead is reserved and slept for
#: in the worker; a later one sends the job back to the queue with a countdown.
SHORT_WAIT_S = 0.5
#: Countdown of a job that found every concurrency slot taken.
SLOT_WAIT_S = 0.5


@dataclass(frozen=True)
class Pass:
    """The job may send its request now; ``slot`` is its concurrency lease, if any."""

    slot: str | None = None


@dataclass(frozen=True)
class Wait:
    """The job must wait ``seconds``; ``fail`` when the wait is longer than the job may wait."""

    seconds: float
    reason: str
    fail: bool = False
    #: What it waits for: "rate" (the budget), "concurrency" (a slot) or "pause".
    kind: str = "rate"


def lease_s(profile: Profile) -> float:
    """How long a concurrency slot is held at most: one attempt (connect and read), with room."""
    return 2 * profile.timeout_s + 5


class Gate:
    """The fleet-wide limits of every profile, applied before and after each attempt."""

    def __init__(
        self,
        limiter: RateLimiter,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.limiter = limiter
        self._sleep = sleep
        self._jitter = jitter

    @staticmethod
    def budgets(profile: Profile) -> bool:
        """True when requests of this profile spend a budget (so cache hits should not)."""
        return profile.rate_limit is not None or profile.concurrency is not None

    def enter(self, profile: Profile) -> Pass | Wait:
        slot = None
        if profile.concurrency is not None:
            slot = self.limiter.try_acquire_slot(profile, lease_s(profile))
            if slot is None:
                return Wait(SLOT_WAIT_S * (1 + self._jitter()),
                            f"all {profile.concurrency} concurrency slots of {profile.name!r} are taken",
                            kind="concurrency")
        if profile.rate_limit is None:
            # No budget to spend: only a fleet-wide pause can hold the job back.
            wait_s = self.limiter.pause_left(profile.name)
            paused, reserved = True, wait_s <= 0
        else:
            wait_s, paused, reserved = self.limiter.admission(profile, reserve_s=SHORT_WAIT_S)
        if reserved:
            if wait_s <= 0:
                return Pass(slot)
            metrics.waited(profile.name, "rate")
            self._sleep(wait_s)
            # A pause that began while this job waited for its slot holds it back too.
            wait_s, paused = self.limiter.pause_left(profile.name), True
            if wait_s <= 0:
                return Pass(slot)
        self.leave(profile, Pass(slot))
        if paused and wait_s > profile.backoff.retry_after_max_s:
            return Wait(wait_s, f"profile {profile.name!r} is paused for {wait_s:.1f} s, longer "
                        f"than its limit of {profile.backoff.retry_after_max_s:g} s", fail=True, kind="pause")
        # No countdown may outlast what the broker's visibility timeout was checked for.
        countdown = min(wait_s * (1 + 0.1 * self._jitter()), profile.backoff.longest_countdown_s)
        why = "paused (Retry-After)" if paused else "waiting for the shared rate budget"
        return Wait(countdown, f"profile {profile.name!r} {why}", kind="pause" if paused else "rate")

    def leave(self, profile: Profile, ticket: Pass) -> None:
        if ticket.slot is not None:
            self.limiter.release_slot(profile.name, ticket.slot)

    def after(self, profile: Profile, headers: Mapping[str, str], retry_after_s: float | None) -> None:
        """Pause the whole profile on a Retry-After; in adaptive mode, on exhausted headers too."""
        if retry_after_s is not None and retry_after_s > 0:
            self.limiter.pause(profile.name, retry_after_s)
        elif profile.adaptive_rate:
            self.limiter.observe(profile, headers)
