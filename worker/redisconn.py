"""Redis clients from reqworker's URLs: a plain Redis, or the primary a Sentinel names.

What the URLs may be is ``worker.redisurl``'s. Celery's broker and result backend read
the same URL (kombu's Sentinel transport, Celery's Sentinel backend), so every part of
reqworker follows the same primary through a failover.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from worker.redisurl import SentinelURL, is_sentinel_url

if TYPE_CHECKING:
    from worker.settings import Settings

#: How long a worker's Redis commands keep retrying a lost connection (about a minute:
#: 0.2 s, 0.4 s, … then every 2 s): long enough to ride out a Sentinel failover with
#: Sentinel's default 30 s down-after-milliseconds, short enough to fail a job whose
#: Redis is gone for good.
FAILOVER_RETRIES = 35
FAILOVER_BACKOFF = ExponentialBackoff(cap=2.0, base=0.1)


class PrimaryConnection(SentinelManagedConnection):  # (types-redis 4.6 predates these names)
    """A connection to the primary that asks the Sentinels where it is on every reconnect.

    redis-py's reconnects inside a command's retries go back to the address the
    connection last had, which after a failover is the dead primary: each retry would
    fail the same way, and the command with it.
    """

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        if self._sock is None and self.connection_pool.is_master:  # type: ignore[attr-defined]
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health,  # type: ignore[misc]
                                     retry_socket_connect=retry_socket_connect)


def connect(url: str, settings: Settings, **kwargs: Any) -> redis.Redis[bytes]:
    """A redis-py client for ``url``: the URL's Redis, or the primary its Sentinels name.

    ``kwargs`` go to every connection to Redis (timeouts, ``health_check_interval``).
    """
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **kwargs)
    if not settings.sentinel_master:
        # Settings.from_env refuses this too; a Settings made by hand may not.
        raise ValueError("a sentinel:// URL needs REQWORKER_SENTINEL_MASTER")
    parsed = SentinelURL.parse(url)
    # The Sentinels themselves get the socket_* options only (redis-py's default).
    sentinel = Sentinel(list(parsed.sentinels), **kwargs)
    return sentinel.master_for(
        settings.sentinel_master, db=parsed.db, username=parsed.username,
        password=parsed.password, connection_class=PrimaryConnection,
        **_typed_options(parsed.options),
    )


def _typed_options(options: dict[str, str]) -> dict[str, Any]:
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    out: dict[str, Any] = {}
    for name, value in options.items():
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        out[name] = parser(value) if parser else value
    return out


def worker_client(url: str, settings: Settings) -> redis.Redis[bytes]:
    """A long-lived client of a worker: checks idle connections, rides out a failover."""
    return connect(url, settings, health_check_interval=30, socket_connect_timeout=5,
                   socket_timeout=30,
                   retry=Retry(FAILOVER_BACKOFF, FAILOVER_RETRIES),
                   retry_on_error=[redis.ConnectionError, redis.TimeoutError])


def command_client(url: str, settings: Settings) -> redis.Redis[bytes]:
    """A client of a command-line call: a Redis that is down is reported within seconds."""
    # Through Sentinel a lost connection is retried for a few seconds (a failover); a
    # plain Redis that refuses is reported at once, one that stays silent after a timeout.
    retries = 6 if is_sentinel_url(url) else 0
    return connect(url, settings, socket_connect_timeout=5, socket_timeout=5,
                   retry=Retry(FAILOVER_BACKOFF, retries, supported_errors=(redis.ConnectionError,)))


def describe_redis_error(exc: BaseException) -> str:
    """What a Redis error means to an operator, in a few words (never a password)."""
    text = str(exc).strip().rstrip(".")
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        return "authentication failed (wrong or missing password in the URL)"
    out_of_memory = redis.exceptions.OutOfMemoryError  # type: ignore[attr-defined]  # (old stubs)
    if isinstance(exc, out_of_memory) or text.startswith("OOM"):
        return ("out of memory: Redis refuses writes (maxmemory reached with noeviction); "
                "free memory or raise maxmemory")
    if isinstance(exc, redis.TimeoutError):
        return f"timed out ({text or 'no answer'})"
    if isinstance(exc, redis.ConnectionError):
        return f"cannot connect ({text or type(exc).__name__})"
    if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith("READONLY"):
        return "it is a read-only replica, not the primary"
    return f"{type(exc).__name__}: {text}"
