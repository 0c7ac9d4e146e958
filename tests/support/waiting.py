"""The waiting tests' stack: their profiles, a fleet-wide pause, and where waiting jobs are."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import redis

from producer.client import Batch
from tests.support.loopback import LoopbackAPI
from tests.support.stack import Stack, new_stack
from worker.keys import Keys
from worker.parking import parked_key
from worker.ratelimit import RateLimiter
from worker.settings import Settings

PROFILES = """
[apis.wait]
base_url = "{url}"
timeout = 2
backoff = {{ start = 1, factor = 2, count = 4 }}

[apis.storm]
base_url = "{url}"
timeout = 2
backoff = {{ start = 1, factor = 2, count = 4 }}
"""


def make(redis_url: str, api: LoopbackAPI, tmp: Path, *, profiles: str = PROFILES,
         **extra: str) -> Stack:
    """A stack with the profiles above (or ``profiles``) and a queue of its own."""
    extra.setdefault("REQWORKER_QUEUE", f"q{uuid.uuid4().hex[:8]}")
    return new_stack(redis_url, api, tmp, profiles=profiles, **extra)


def pause(stack: Stack, profile: str, seconds: float) -> None:
    """A fleet-wide pause, as a Retry-After storm leaves it."""
    settings = Settings.from_env(stack.env)
    RateLimiter(redis.Redis.from_url(settings.cache_url), Keys(settings.key_prefix)).pause(profile, seconds)


def held_by_workers(stack: Stack) -> int:
    """Jobs held unacknowledged by workers (kombu's Redis ack emulation)."""
    return int(redis.Redis.from_url(stack.env["REQWORKER_REDIS_URL"]).hlen("unacked"))


def parked(stack: Stack) -> int:
    queue = Settings.from_env(stack.env).queue
    return int(redis.Redis.from_url(stack.env["REQWORKER_REDIS_URL"]).zcard(parked_key(queue)))


def submit_many(stack: Stack, jobs: list[dict[str, Any]]) -> Batch:
    return stack.client.submit_many(jobs).batch
