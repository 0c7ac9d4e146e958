"""Process-wide settings, read once from the environment into a frozen object.

Nothing is read when a module is imported: a process reads its settings when it
starts (a ``reqworker`` command, or Celery configuring ``worker.app``) and passes
them down, so a bad value is one line and exit 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

from worker.redisurl import SentinelURL, is_redis_url, is_sentinel_url, is_tls_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_ALIVE_FILE = "/tmp/reqworker-alive"

#: Seconds after a worker's last sign of life before Redis hands the messages it held
#: to another worker. A live worker renews its leases (``worker.transport``) and
#: countdowns wait in Redis, not in workers, so this only bounds recovery after a
#: worker dies outright; one attempt must still fit in it (``worker.startup``).
DEFAULT_VISIBILITY_TIMEOUT_S = 40

#: Seconds results and batch records are kept: long enough to fetch the results of
#: an overnight sync days later.
DEFAULT_RESULT_EXPIRES_S = 7 * 24 * 3600

#: Jobs a bulk enqueue packs into one task message at most (``producer.bundling``):
#: Celery's own work per message costs more CPU than a quick API answer does.
DEFAULT_JOBS_PER_MESSAGE = 16
#: The most jobs one message may carry: a message stays a few hundred KB at most.
MAX_JOBS_PER_MESSAGE = 100

#: Exit status of a process started with a setting it cannot use, as ``reqworker`` exits.
EXIT_BAD_SETTING = 2

T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value reqworker cannot use."""


def _int_env(env: Mapping[str, str], name: str, default: int, *, unit: str = "seconds",
             most: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number of {unit}") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be greater than 0")
    if most is not None and value > most:
        raise SettingsError(f"{name}={raw!r} must be at most {most}")
    return value


@dataclass(frozen=True)
class Settings:
    """Where reqworker finds its services and its API profiles."""

    redis_url: str
    broker_url: str
    result_backend: str
    cache_url: str
    apis_path: str
    visibility_timeout_s: int
    result_expires_s: int
    #: Prefix of every Redis key reqworker writes itself (batches, cache, tokens).
    key_prefix: str
    #: The broker queue request jobs travel on.
    queue: str = "reqworker"
    #: The name Sentinel knows the primary by, for ``sentinel://`` URLs (see worker.redisconn).
    sentinel_master: str | None = None
    #: A module of the user's own Celery settings, applied over celeryconfig's.
    celery_config: str | None = None
    #: The file a worker touches while it lives, for liveness probes (see worker.alive).
    alive_file: str = DEFAULT_ALIVE_FILE
    #: Jobs a bulk enqueue packs into one message at most; 1 sends each job alone.
    jobs_per_message: int = DEFAULT_JOBS_PER_MESSAGE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = env.get("REQWORKER_REDIS_URL") or DEFAULT_REDIS_URL
        settings = cls(
            redis_url=redis_url,
            broker_url=env.get("REQWORKER_BROKER_URL") or redis_url,
            result_backend=env.get("REQWORKER_RESULT_BACKEND") or redis_url,
            cache_url=env.get("REQWORKER_CACHE_URL") or redis_url,
            apis_path=env.get("REQWORKER_APIS") or "./apis.toml",
            visibility_timeout_s=_int_env(
                env, "REQWORKER_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_S
            ),
            result_expires_s=_int_env(env, "REQWORKER_RESULT_EXPIRES", DEFAULT_RESULT_EXPIRES_S),
            key_prefix=env.get("REQWORKER_KEY_PREFIX") or "reqworker",
            queue=env.get("REQWORKER_QUEUE") or "reqworker",
            sentinel_master=env.get("REQWORKER_SENTINEL_MASTER") or None,
            celery_config=env.get("REQWORKER_CELERY_CONFIG") or None,
            alive_file=env.get("REQWORKER_ALIVE_FILE") or DEFAULT_ALIVE_FILE,
            jobs_per_message=_int_env(env, "REQWORKER_JOBS_PER_MESSAGE", DEFAULT_JOBS_PER_MESSAGE,
                                      unit="jobs", most=MAX_JOBS_PER_MESSAGE),
        )
        settings.check_urls()
        return settings

    def redis_urls(self) -> dict[str, str]:
        """Each Redis reqworker uses, by what it holds (the broker only when it is a Redis)."""
        urls = {"results": self.result_backend, "cache": self.cache_url}
        if self.broker_is_redis:
            urls["broker"] = self.broker_url
        return urls

    def check_urls(self) -> None:
        """Refuse a rediss:// URL that does not say how to check the server's certificate
        (Celery's result backend would raise), and a sentinel:// URL without the primary's
        name or that cannot be read."""
        for url in {self.broker_url, self.result_backend, self.cache_url}:
            if is_tls_url(url) and "ssl_cert_reqs=" not in url:
                raise SettingsError(f"{redact_url(url)}: a rediss:// URL needs ssl_cert_reqs "
                                    "(add ?ssl_cert_reqs=required&ssl_ca_certs=/path/to/ca.pem)")
            if not is_sentinel_url(url):
                continue
            if not self.sentinel_master:
                raise SettingsError(f"{redact_url(url)} is a Sentinel URL: set "
                                    "REQWORKER_SENTINEL_MASTER to the name of its primary")
            try:
                SentinelURL.parse(url)
            except ValueError as exc:
                raise SettingsError(f"cannot read {redact_url(url)}: {exc}") from None

    @property
    def broker_is_redis(self) -> bool:
        """Whether the broker is a Redis, directly or through Sentinel."""
        return is_redis_url(self.broker_url)


def or_exit(build: Callable[[], T]) -> T:
    """``build()`` at a process's start; a setting it cannot use ends the process instead:
    one line naming the variable, exit 2 (what ``reqworker`` does for a bad setting)."""
    try:
        return build()
    except SettingsError as exc:
        print(f"reqworker: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_SETTING)


@cache
def process_settings() -> Settings:
    """This process's settings: read from the environment once, the first time they are
    needed (as it starts), then the same object everywhere. A bad value ends the process
    (``or_exit``). ``forget_process_settings`` makes the next call read them again."""
    return or_exit(Settings.from_env)


def forget_process_settings() -> None:
    process_settings.cache_clear()


def redact_url(url: str) -> str:
    """A service URL with any password replaced, fit for messages and logs.

    Each address of a list (``sentinel://…;sentinel://…``) is redacted.
    """
    from urllib.parse import urlsplit, urlunsplit

    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
