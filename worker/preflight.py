"""The checks every worker makes before it takes a job, however it was started.

``reqworker worker`` runs them before it starts Celery, and a worker started with
``celery -A worker.app worker`` runs them from its ``worker_init`` signal, so both
refuse the same things with the same one-line message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis

from worker.profiles import Profile, load_profiles
from worker.redisconn import command_client, describe_redis_error
from worker.settings import Settings, redact_url
from worker.startup import check_visibility

#: Exit status of a worker that must not start: 2 bad configuration, 1 a service is unusable.
EXIT_CONFIG, EXIT_SERVICE = 2, 1


class ServiceError(RuntimeError):
    """A Redis reqworker needs cannot be reached or refuses writes; the message says which."""


def check_redis(settings: Settings, roles: Iterable[str] | None = None) -> None:
    """Reach every Redis of the deployment (or those of ``roles``) and make one expiring
    write to each."""
    probe = f"{settings.key_prefix}:probe"
    seen: set[str] = set()
    for role, url in settings.redis_urls().items():
        if url in seen or (roles is not None and role not in roles):
            continue
        seen.add(url)
        client = command_client(url, settings)
        try:
            client.set(probe, "1", px=10_000)
        except redis.RedisError as exc:
            raise ServiceError(redis_failure(url, exc, role)) from None
        finally:
            client.close()


def redis_failure(url: str, exc: BaseException, role: str | None = None) -> str:
    """One line: what went wrong with which Redis."""
    what = f" ({role})" if role else ""
    return f"Redis at {redact_url(url)}{what}: {describe_redis_error(exc)}"


def startup_checks(settings: Settings) -> None:
    """Raise what keeps this worker from starting: bad profiles, a visibility timeout a job
    could outlast (``StartupError``), or a Redis it cannot use (``ServiceError``)."""
    check_visibility(settings, load_profiles(settings.apis_path))
    check_redis(settings)


#: Beyond its longest job run, seconds a stopping worker needs to hand back the rest.
SHUTDOWN_MARGIN_S = 15.0


def longest_run_s(profile: Profile) -> float:
    """Seconds one run of a job of this profile may last once started: a token renewal it
    may wait for (an OAuth profile), then one HTTP attempt."""
    renewal_s = profile.request_lease_s if profile.auth.kind == "oauth2" else 0.0
    return renewal_s + profile.timeout_s


def shutdown_grace_s(profiles: Mapping[str, Profile]) -> float:
    """The least grace period (terminationGracePeriodSeconds, TimeoutStopSec,
    stop_grace_period) that lets a warm shutdown finish every job it is running."""
    return max((longest_run_s(p) for p in profiles.values()), default=0.0) + SHUTDOWN_MARGIN_S
