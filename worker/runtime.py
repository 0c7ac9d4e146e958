"""What a worker process builds once: profiles, Redis clients, sessions, authorisers."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from worker.admission import Gate
from worker.auth import Authoriser, NoAuth, StaticBearer
from worker.batchcount import BatchCounters
from worker.executor import Executor
from worker.handoff import Handoffs
from worker.http import Sessions
from worker.inflight import InFlight
from worker.keys import Keys
from worker.oauth import OAuth2Authoriser
from worker.profiles import Profile, load_profiles
from worker.ratelimit import RateLimiter
from worker.redisconn import worker_client
from worker.settings import Settings, forget_process_settings, process_settings
from worker.tokens import TokenStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    profiles: dict[str, Profile]
    cache_redis: redis.Redis[bytes]
    executor: Executor
    counters: BatchCounters
    inflight: InFlight
    handoffs: Handoffs


def make_authoriser(
    profile: Profile, client: redis.Redis[bytes] | None = None, keys: Keys | None = None
) -> Authoriser:
    """The authoriser of a profile; ``oauth2`` needs the Redis that holds the shared token."""
    if profile.auth.kind == "bearer":
        return StaticBearer(profile.auth)
    if profile.auth.kind == "oauth2":
        if client is None:
            raise ValueError(f"profile {profile.name!r}: an oauth2 authoriser needs a Redis client")
        store = TokenStore(client, keys or Keys(), profile.name, lease_s=profile.request_lease_s,
                           wait_s=profile.timeout_s + 5.0)
        return OAuth2Authoriser(profile, store)
    return NoAuth()


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or process_settings()
    profiles = load_profiles(settings.apis_path)
    keys = Keys(settings.key_prefix)
    cache_redis = worker_client(settings.cache_url, settings)
    authorisers: dict[str, Authoriser] = {
        name: make_authoriser(profile, cache_redis, keys) for name, profile in profiles.items()
    }
    gate = Gate(RateLimiter(cache_redis, keys))
    # Batches live beside the results, which any machine that follows them can read.
    results_redis = worker_client(settings.result_backend, settings)
    counters = BatchCounters(results_redis, keys, settings.result_expires_s)
    inflight = InFlight(results_redis, keys, settings.result_expires_s)
    executor = Executor(profiles, Sessions(profiles, cache_redis, keys), authorisers, gate,
                        inflight)
    handoffs = Handoffs(results_redis, keys, settings.result_expires_s)
    return Runtime(settings, profiles, cache_redis, executor, counters, inflight, handoffs)


_lock = threading.Lock()
_current: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    """This process's runtime, built on first use (after any fork)."""
    global _current
    current = _current
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _lock:
        if _current is None or _current[0] != os.getpid():
            _current = (os.getpid(), build_runtime())
        return _current[1]


def reset() -> None:
    """Forget the runtime, so a forked child builds its own connections (and reads its settings)."""
    global _current
    _current = None
    forget_process_settings()
