"""API profiles: the ``apis.toml`` file that says where each API lives and how to reach it."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from worker.authconfig import AUTH_KINDS, AuthConfig, read_auth
from worker.backoff import Backoff
from worker.durations import Rate, parse_duration_s, parse_rate, parse_size
from worker.tables import ProfileError, TableReader
from worker.urls import has_user_info, is_http_url

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
__all__ = ["AUTH_KINDS", "AuthConfig", "Profile", "ProfileError", "load_profiles", "parse_profiles"]


#: The default ``max_body``: 10 MiB.
DEFAULT_MAX_BODY = 10 * 1024 * 1024


@dataclass(frozen=True)
class Profile:
    """One API: where it lives and how jobs against it behave."""

    name: str
    base_url: str
    #: Requests allowed to the whole fleet; None for no limit.
    rate_limit: Rate | None = None
    #: Requests that may go at once beyond the steady rate.
    rate_burst: int = 1
    #: Share of the rate held back, so that requests' time in transit never lets the
    #: API see more than the rate in one window (a strict sliding window would 429).
    rate_margin: float = 0.03
    #: Slow down on the API's RateLimit-Remaining/Reset headers before it says 429.
    adaptive_rate: bool = False
    #: Requests in flight at once across the fleet; None for no cap.
    concurrency: int | None = None
    cache_expire_s: float = 28 * 86400.0
    #: Seconds one HTTP attempt may take (connect, and then each read).
    timeout_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    auth: AuthConfig = field(default_factory=AuthConfig)
    #: The largest answer a job may get, in bytes after decompression.
    max_body: int = DEFAULT_MAX_BODY
    #: Where redirects may lead: "base" (under base_url), "any", or URL prefixes.
    follow_redirects: str | tuple[str, ...] = "base"
    #: The cache follows the API's Cache-Control and Expires (up to ``cache_expire_s``).
    cache_control: bool = False
    #: The most pages one paginated job may fetch; a job's ``paginate.max_pages`` may only lower it.
    max_pages: int = 1000

    @property
    def request_lease_s(self) -> float:
        """Seconds a lease taken for one HTTP request of this profile lasts at most: a
        concurrency slot, a token renewal. The connect and the read timeouts, with room, so
        that a process that dies holding the lease blocks nobody for longer."""
        return 2 * self.timeout_s + 5.0

    @property
    def credential_headers(self) -> tuple[str, ...]:
        """Header names that carry this profile's credentials."""
        names = {"Authorization", "Proxy-Authorization", *self.auth.header_names}
        return tuple(sorted(names))


def load_profiles(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    with_secrets: bool = True,
) -> dict[str, Profile]:
    """Read every profile in a TOML file.

    ``${VAR}`` is expanded from ``env``. With ``with_secrets=False`` (the producer's
    view) the ``auth`` tables are checked but their variables are not needed.
    """
    env = os.environ if env is None else env
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(
            f"{path}: no such file (set REQWORKER_APIS to your profiles file)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    return parse_profiles(raw, env, source=str(path), with_secrets=with_secrets)


def parse_profiles(
    raw: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    source: str = "apis.toml",
    with_secrets: bool = True,
) -> dict[str, Profile]:
    _only_keys(raw, {"apis"}, "", source)
    apis = raw.get("apis")
    if not isinstance(apis, Mapping) or not apis:
        raise ProfileError(f"{source}: no profiles: add a table [apis.NAME]")
    reader = _Reader(env, source, with_secrets)
    return {name: reader.profile(name, table) for name, table in apis.items()}


def _only_keys(table: Mapping[str, Any], allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        place = f"[{where}]" if where else "the top level"
        raise ProfileError(
            f"{source}: unknown setting {unknown[0]!r} in {place}; "
            f"known: {', '.join(sorted(allowed))}"
        )


class _Reader(TableReader):
    """Reads the ``[apis.NAME]`` tables; ``worker.authconfig`` reads their ``auth`` tables."""

    def profile(self, name: str, table: Any) -> Profile:
        where = f"apis.{name}"
        if not _NAME.match(name):
            raise self.fail(where, "a profile name is letters, digits, '_', '-' or '.'")
        if not isinstance(table, Mapping):
            raise self.fail(where, "must be a table")
        _only_keys(
            table,
            {"base_url", "rate_limit", "rate_burst", "rate_margin", "adaptive_rate", "concurrency",
             "cache_expire", "timeout", "backoff", "auth", "max_body", "follow_redirects",
             "cache_control", "max_pages"},
            where,
            self.source,
        )
        if "base_url" not in table:
            raise self.fail(where, "base_url is required")
        base_url = self.base_url(self.expand(table["base_url"], f"{where}.base_url"), where)
        rate = None
        if "rate_limit" in table:
            try:
                rate = parse_rate(self.expand(table["rate_limit"], f"{where}.rate_limit"))
            except ValueError as exc:
                raise self.fail(f"{where}.rate_limit", str(exc)) from None
        try:
            cache_expire_s = parse_duration_s(table.get("cache_expire", "28d"))
        except ValueError as exc:
            raise self.fail(f"{where}.cache_expire", str(exc)) from None
        burst = self.whole(table, "rate_burst", where, 1, minimum=1) or 1
        margin = self.number(table, "rate_margin", where, 0.03)
        if not 0 <= margin < 0.5:
            raise self.fail(f"{where}.rate_margin", "must be from 0 up to (not including) 0.5")
        concurrency = self.whole(table, "concurrency", where, None, minimum=1)
        adaptive = table.get("adaptive_rate", False)
        if not isinstance(adaptive, bool):
            raise self.fail(f"{where}.adaptive_rate", "must be true or false")
        timeout_s = self.number(table, "timeout", where, 30.0)
        if timeout_s <= 0:
            raise self.fail(f"{where}.timeout", "must be more than 0 seconds")
        try:
            max_body = parse_size(table.get("max_body", DEFAULT_MAX_BODY))
        except ValueError as exc:
            raise self.fail(f"{where}.max_body", str(exc)) from None
        cache_control = table.get("cache_control", False)
        if not isinstance(cache_control, bool):
            raise self.fail(f"{where}.cache_control", "must be true or false")
        return Profile(
            name=name,
            base_url=base_url,
            rate_limit=rate,
            rate_burst=burst,
            rate_margin=margin,
            adaptive_rate=adaptive,
            concurrency=concurrency,
            cache_expire_s=cache_expire_s,
            timeout_s=timeout_s,
            backoff=self.backoff(table.get("backoff", {}), f"{where}.backoff"),
            auth=self.auth(table.get("auth", {}), f"{where}.auth", base_url),
            max_body=max_body,
            follow_redirects=self.redirects(table.get("follow_redirects", "base"), where),
            cache_control=cache_control,
            max_pages=self.whole(table, "max_pages", where, 1000, minimum=1) or 1000,
        )

    def redirects(self, value: Any, where: str) -> str | tuple[str, ...]:
        where = f"{where}.follow_redirects"
        if value in ("base", "any"):
            return str(value)
        if not isinstance(value, list) or not value:
            raise self.fail(where, f'must be "base", "any" or a list of URL prefixes, not {value!r}')
        prefixes = []
        for item in value:
            prefix = self.expand(item, where)
            if not is_http_url(prefix) or has_user_info(prefix):
                raise self.fail(where, f"{prefix!r} is not an http(s) URL prefix with a host")
            prefixes.append(prefix)
        return tuple(prefixes)

    def base_url(self, url: str, where: str) -> str:
        if not is_http_url(url):
            raise self.fail(f"{where}.base_url", f"{url!r} is not an http(s) URL with a host")
        if has_user_info(url):
            raise self.fail(f"{where}.base_url", "must not carry a user name or password")
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise self.fail(f"{where}.base_url", "must not have a query or a fragment")
        return url.rstrip("/")

    def backoff(self, table: Any, where: str) -> Backoff:
        if not isinstance(table, Mapping):
            raise self.fail(where, "must be a table like { start = 0.5, factor = 1.5, count = 10 }")
        _only_keys(table, {"start", "factor", "count"}, where, self.source)
        start = self.number(table, "start", where, 0.5)
        factor = self.number(table, "factor", where, 1.5)
        count = table.get("count", 10)
        if start <= 0:
            raise self.fail(f"{where}.start", "must be more than 0 seconds")
        if factor < 1:
            raise self.fail(f"{where}.factor", "must be 1 or more")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise self.fail(f"{where}.count", f"must be a whole number 0 or more, not {count!r}")
        return Backoff(start_s=start, factor=factor, count=count)

    def auth(self, table: Any, where: str, base_url: str) -> AuthConfig:
        return read_auth(self, table, where, base_url)
