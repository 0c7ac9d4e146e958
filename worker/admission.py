"""The gate before each attempt: a job passes, waits until its profile's shared rate budget,
pause and concurrency cap let it go, or is refused (paused for longer than it may wait).

A job that waits here has not failed: waiting spends no attempt. A job reserves its
own slot of the shared budget, up to ``RESERVE_HORIZON_S`` ahead. A slot due within
half a second is slept for in the worker; a later one sends the job back to wait in
Redis (``worker.transport``) until its slot is due, when it goes without asking
again. So waiting jobs never race each other for the next slot, each passes through
the broker about twice, and no worker slot is held by a waiting job.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker import metrics
from worker.profiles import Profile
from worker.ratelimit import RateLimiter

#: A reserved slot at most this many seconds ahead is slept for in the worker; a later
#: one sends the job back to wait in Redis until it is due.
SHORT_WAIT_S = 0.5
#: Slots of the rate budget are reserved at most this many seconds ahead. A job whose
#: slot would lie further off waits that long and asks again, so that a backlog
#: abandoned by its producer does not hold the budget for hours.
RESERVE_HORIZON_S = 600.0
#: First countdown of a job that found every concurrency slot taken; it doubles with
#: each further wait of the job, up to ``SLOT_WAIT_MAX_S``.
SLOT_WAIT_S = 0.5
SLOT_WAIT_MAX_S = 8.0
#: A job waiting in Redis for its reserved slot comes back this long before the slot,
#: and sleeps the rest in the worker, so that its request leaves on time.
EARLY_S = 0.4
#: A job back later than this after its reserved slot, or woken that late from its sleep
#: for the slot, gives it up and asks for a new one: sent late, it would add to the
#: requests of a later second.
LATE_S = 0.05


@dataclass(frozen=True)
class Pass:
    """The job may send its request now; ``slot`` is its concurrency lease, if any."""

    slot: str | None = None


@dataclass(frozen=True)
class Wait:
    """The job must wait ``seconds`` (spending no attempt), then ask again.

    ``slot_at``: the time (this host's clock, epoch seconds) of the slot of the rate
    budget reserved for the job; it comes back a little before it (``EARLY_S``).
    """

    seconds: float
    reason: str
    slot_at: float | None = None
    #: What it waits for: "rate" (the budget), "concurrency" (a slot) or "pause".
    kind: str = "rate"


@dataclass(frozen=True)
class Refused:
    """The job may not wait: its profile is paused for longer than it may wait, so it fails."""

    reason: str


class Gate:
    """The fleet-wide limits of every profile, applied before and after each attempt."""

    def __init__(
        self,
        limiter: RateLimiter,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limiter = limiter
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock

    @staticmethod
    def budgets(profile: Profile) -> bool:
        """True when requests of this profile spend a budget (so cache hits should not)."""
        return profile.rate_limit is not None or profile.concurrency is not None

    def enter(self, profile: Profile, *, slot_at: float | None = None,
              waits: int = 0) -> Pass | Wait | Refused:
        """May a job of ``profile`` send its request now?

        ``slot_at``: the slot of the budget reserved for the job on an earlier run
        (``Wait.slot_at``). ``waits``: how often the job waited already.
        """
        slot = None
        if profile.concurrency is not None:
            slot = self.limiter.try_acquire_slot(profile, profile.request_lease_s)
            if slot is None:
                wait_s = min(SLOT_WAIT_S * 2 ** min(waits, 8), SLOT_WAIT_MAX_S)
                return Wait(wait_s * (1 + self._jitter()),
                            f"all {profile.concurrency} concurrency slots of {profile.name!r} are taken",
                            kind="concurrency")
        now = self._clock()
        if slot_at is not None and slot_at - now >= -LATE_S:
            # The slot was reserved on an earlier run: only a pause can hold the job back.
            if slot_at - now > SHORT_WAIT_S:
                self.leave(profile, Pass(slot))
                return Wait(slot_at - now - EARLY_S, f"profile {profile.name!r} waits for its "
                            "reserved slot of the shared rate budget", slot_at=slot_at)
            wait_s, paused, took, asked = max(slot_at - now, 0.0), False, True, False
        elif profile.rate_limit is None:
            wait_s, paused, took, asked = 0.0, False, True, False
        else:
            wait_s, paused, took = self.limiter.decide(profile, reserve_s=RESERVE_HORIZON_S)
            asked = True
            if took and wait_s > SHORT_WAIT_S:
                self.leave(profile, Pass(slot))
                return Wait(wait_s - EARLY_S, f"profile {profile.name!r} waits for its slot of the "
                            f"shared rate budget in {wait_s:.1f} s", slot_at=now + wait_s)
        if took:
            if asked and wait_s <= 0:
                return Pass(slot)  # the admission itself found no pause
            if wait_s > 0:
                if asked:  # a short wait for a slot just reserved (not the end of an earlier wait)
                    metrics.waited(profile.name, "rate")
                self._sleep(wait_s)
                if self._clock() - (now + wait_s) > LATE_S:
                    # Woken too late for its slot (a worker short of CPU): as for a job back
                    # late from the broker, it asks for a new slot rather than add to a later
                    # second's requests. Each time it wakes that late costs one slot.
                    self.leave(profile, Pass(slot))
                    return self.enter(profile, waits=waits)
            # A pause (one that began while this job slept for its slot too) holds it back.
            wait_s, paused = self.limiter.pause_left(profile.name), True
            if wait_s <= 0:
                return Pass(slot)
        self.leave(profile, Pass(slot))
        if paused and wait_s > profile.backoff.retry_after_max_s:
            return Refused(f"profile {profile.name!r} is paused for {wait_s:.1f} s, longer "
                           f"than its limit of {profile.backoff.retry_after_max_s:g} s")
        if not paused and wait_s > RESERVE_HORIZON_S:
            # Ask again once the slot is within reach, to reserve it then.
            wait_s -= RESERVE_HORIZON_S / 2
        countdown = wait_s * (1 + 0.1 * self._jitter())
        why = "is paused (Retry-After)" if paused else "waits for the shared rate budget"
        return Wait(countdown, f"profile {profile.name!r} {why}: {wait_s:.1f} s",
                    kind="pause" if paused else "rate")

    def leave(self, profile: Profile, ticket: Pass) -> None:
        if ticket.slot is not None:
            self.limiter.release_slot(profile.name, ticket.slot)

    def after(self, profile: Profile, headers: Mapping[str, str], retry_after_s: float | None) -> None:
        """Pause the whole profile on a Retry-After; in adaptive mode, on exhausted headers too.

        A Retry-After longer than the profile waits (the seed's ``timeout``) fails only the
        job that got it: it pauses nobody.
        """
        if retry_after_s is not None and 0 < retry_after_s <= profile.backoff.retry_after_max_s:
            self.limiter.pause(profile.name, retry_after_s)
        elif profile.adaptive_rate:
            self.limiter.observe(profile, headers)
