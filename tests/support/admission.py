"""A limiter scripted for the gate's tests: what it answers, and what it was asked."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.admission import Gate
from worker.backoff import Backoff
from worker.durations import parse_rate
from worker.profiles import Profile
from worker.ratelimit import RateDecision


@dataclass
class FakeLimiter:
    """Answers the gate's questions from a script; records what it was asked."""

    answers: list[RateDecision]
    pause_after_sleep_s: float = 0.0
    slots_free: bool = True
    released: list[str] = field(default_factory=list)
    reserve_asked: list[float] = field(default_factory=list)

    def decide(self, profile: Profile, now_s: float | None = None, *,
               reserve_s: float = 0.0) -> RateDecision:
        self.reserve_asked.append(reserve_s)
        return self.answers.pop(0)

    def pause_left(self, name: str) -> float:
        return self.pause_after_sleep_s

    def try_acquire_slot(self, profile: Profile, lease_s: float) -> str | None:
        return "slot-1" if self.slots_free else None

    def release_slot(self, name: str, token: str) -> None:
        self.released.append(token)


PROFILE = Profile(name="api", base_url="http://x", rate_limit=parse_rate("10/s"),
                  backoff=Backoff(0.5, 1.5, 10))


NOW = 1_000_000.0


def gate(limiter: FakeLimiter, slept: list[float]) -> Gate:
    return Gate(limiter, sleep=slept.append, jitter=lambda: 0.0,  # type: ignore[arg-type]
                clock=lambda: NOW)
