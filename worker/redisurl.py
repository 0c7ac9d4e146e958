"""What a Redis URL of reqworker may be, and what a Sentinel URL says: no client, no I/O.

``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs are redis-py's. A Sentinel URL is
kombu's form, ``sentinel://[:PASSWORD@]HOST:PORT[/DB][;sentinel://HOST:PORT…]``: the
Sentinels to ask, with the primary's password and database in the first one, and the
primary's name in ``REQWORKER_SENTINEL_MASTER``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

TLS_SCHEME = "rediss"
#: The schemes of the URLs redis-py reads itself.
REDIS_SCHEMES = frozenset({"redis", TLS_SCHEME, "unix"})
SENTINEL_SCHEME = "sentinel"
#: Sentinel's own port, when a Sentinel URL names none.
DEFAULT_SENTINEL_PORT = 26379


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return scheme if sep else ""


def is_sentinel_url(url: str) -> bool:
    return _scheme(url) == SENTINEL_SCHEME


def is_tls_url(url: str) -> bool:
    """Whether ``url`` reaches Redis over TLS (``rediss://``)."""
    return _scheme(url) == TLS_SCHEME


def is_redis_url(url: str) -> bool:
    """Whether ``url`` reaches a Redis (directly or through Sentinel)."""
    return _scheme(url) in REDIS_SCHEMES or is_sentinel_url(url)


@dataclass(frozen=True)
class SentinelURL:
    """What a Sentinel URL says: the Sentinels, and how to talk to the primary they name."""

    sentinels: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None
    #: Query parameters of the first URL (socket_timeout=…), passed on to the connections.
    options: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        sentinels: list[tuple[str, int]] = []
        first = None
        for chunk in url.split(";"):
            chunk = chunk.strip()
            if not chunk:
                continue
            if not is_sentinel_url(chunk):
                raise ValueError(f"{chunk!r} is not a sentinel:// address")
            parts = urlsplit(chunk)
            if not parts.hostname:
                raise ValueError(f"{chunk!r} names no host")
            sentinels.append((parts.hostname, parts.port or DEFAULT_SENTINEL_PORT))
            first = first or parts
        if first is None:
            raise ValueError("a sentinel:// URL names no Sentinel")
        path = first.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"database {path!r} in {url!r} is not a number")
        return cls(
            sentinels=tuple(sentinels),
            db=int(path or 0),
            username=unquote(first.username) if first.username else None,
            password=unquote(first.password) if first.password else None,
            options=dict(parse_qsl(first.query)),
        )
