"""The shared GET cache: requests-cache on Redis, one namespace per profile, JSON only."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from requests.cookies import RequestsCookieJar
from requests_cache import CachedSession
from requests_cache.backends.redis import RedisCache
from requests_cache.cache_keys import redact_response
from requests_cache.models.response import CachedResponse
from requests_cache.policy import directives as cache_directives
from requests_cache.policy.expiration import utcnow
from requests_cache.serializers.pipeline import SerializerPipeline, Stage
from requests_cache.serializers.preconf import json_preconf_stage

from worker.keys import Keys
from worker.profiles import Profile


def _valid_kwargs_memo() -> Callable[..., dict[str, Any]]:
    """requests-cache's ``get_valid_kwargs``, with each function's parameters read once.

    requests-cache parses the ``Cache-Control`` of every request and every cached answer
    (``CacheDirectives.from_headers``), and each time reads ``inspect.signature`` of
    the same ``__init__``: a third of a cache hit's CPU. The parameters of a function
    do not change, so they are remembered; what the function returns is the same.
    """
    params: dict[Any, frozenset[str]] = {}

    def valid_kwargs(func: Any, kwargs: dict[str, Any], extras: Any = None) -> dict[str, Any]:
        known = params.get(func)
        if known is None:
            known = params[func] = frozenset(inspect.signature(func).parameters)
        allowed = known | frozenset(extras or ())
        return {k: v for k, v in kwargs.items() if k in allowed and v is not None}

    return valid_kwargs


_FAST_VALID_KWARGS = _valid_kwargs_memo()


def _install_valid_kwargs_memo() -> None:
    """Put the memo in place of requests-cache's function, once (when a backend is made)."""
    if vars(cache_directives).get("get_valid_kwargs") is not _FAST_VALID_KWARGS:
        setattr(cache_directives, "get_valid_kwargs", _FAST_VALID_KWARGS)  # noqa: B010 - not exported

#: Answers larger than this (bytes) are never cached: one entry must not crowd out thousands.
CACHE_MAX_BODY = 2 * 1024 * 1024

#: JSON, never pickle: whoever can write to Redis must not be able to run code here.
JSON_SERIALIZER = SerializerPipeline(
    [json_preconf_stage, Stage(dumps=partial(json.dumps, separators=(",", ":")), loads=json.loads)],
    name="reqworker-json",
    is_binary=False,
)


class RedactingRedisCache(RedisCache):
    """A Redis cache that stores no credential and no cookie, and whose entries all expire.

    requests-cache redacts the final request, but a redirected response keeps its
    history, and each step's request headers would otherwise be stored as sent.
    """

    def __init__(self, *args: Any, credential_headers: tuple[str, ...], longest_s: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credential_headers = credential_headers
        self._longest = timedelta(seconds=max(longest_s, 1.0))

    def get_response(self, key: str, default: Any = None) -> Any:
        """The stored response under ``key``: one read, no look-up of redirect aliases.

        A redirected answer is stored under the key of the request that was made; jobs
        ask for the same request again, so the alias table would only cost a round trip.
        """
        try:
            response = self.responses.get(key)
        except (AttributeError, KeyError):
            return default
        return default if response is None else response

    def save_response(self, response: Any, cache_key: str | None = None, expires: Any = None) -> None:
        """Store ``response`` without credentials or cookies, for ``cache_expire`` at most.

        Unlike requests-cache, it writes no redirect-alias hash: nothing reads it (see
        ``get_response``), and it would never expire.
        """
        cache_key = cache_key or self.create_key(response.request)
        latest = utcnow() + self._longest
        cached = CachedResponse.from_response(
            response, expires=latest if expires is None or expires > latest else expires)
        cached = redact_response(cached, self._settings.ignored_parameters)
        for step in (cached, *cached.history):
            step.headers.pop("Set-Cookie", None)
            step.cookies = RequestsCookieJar()
            step.request.cookies = RequestsCookieJar()
            for name in (*self._credential_headers, "Cookie"):
                if name in step.request.headers:
                    step.request.headers[name] = "REDACTED"
        try:
            self.responses[cache_key] = cached
        except RecursionError:
            # A JSON body is kept as JSON (decode_content), and one nested too deep for
            # that is not worth caching: the job has its answer all the same.
            return


def cache_backend(profile: Profile, connection: redis.Redis[bytes], keys: Keys) -> RedactingRedisCache:
    _install_valid_kwargs_memo()
    return RedactingRedisCache(
        namespace=keys.cache_namespace(profile.name),
        connection=connection,
        serializer=JSON_SERIALIZER,
        # A JSON or text body is kept as itself, not base64: a third smaller in Redis.
        decode_content=True,
        credential_headers=profile.credential_headers,
        longest_s=profile.cache_expire_s,
    )


#: Request headers that never make two GETs different: the cache's own controls and
#: validators, and what the session sets the same way for every job.
_NOT_IN_KEY = frozenset({"cache-control", "pragma", "if-none-match", "if-modified-since",
                         "accept-encoding", "connection", "content-length"})


def cache_key(request: Any, ignored_parameters: Any = (), match_headers: Any = None,
              **_: Any) -> str:
    """What makes two GETs the same: method, URL with its query in a stable order, body, headers.

    A job's headers (``Accept: text/csv``) take part, and so do the headers an answer's
    ``Vary`` names; credential headers never do: two jobs of a profile share the answer.
    """
    parts = urlsplit(request.url or "")
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    secret = {str(name).lower() for name in ignored_parameters or ()}
    vary = match_headers if isinstance(match_headers, list | tuple) else ()
    named = {str(name).lower() for name in vary}
    headers = sorted(
        (str(name).lower(), str(value)) for name, value in (request.headers or {}).items()
        if str(name).lower() not in secret
        and (str(name).lower() not in _NOT_IN_KEY or str(name).lower() in named)
    )
    identity = f"{request.method} {urlunsplit(parts._replace(query=query, fragment=''))}"
    material = json.dumps([identity, headers]).encode() + b"\0" + body
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def session_kwargs(profile: Profile, backend: RedactingRedisCache) -> dict[str, Any]:
    """Settings of a profile's ``CachedSession``: GET only, the profile's expiry."""
    return {
        "backend": backend,
        "expire_after": profile.cache_expire_s,
        "allowable_methods": ("GET",),
        "allowable_codes": (200, 203, 300, 301, 308),
        "ignored_parameters": profile.credential_headers,
        "match_headers": False,
        "cache_control": profile.cache_control,
        "key_fn": cache_key,
        "stale_if_error": False,
        "filter_fn": cacheable,
    }


def cacheable(response: Any) -> bool:
    """Whether an answer may be stored: not too large, and not marked ``no-store``."""
    if len(response.content or b"") > CACHE_MAX_BODY:
        return False
    return "no-store" not in response.headers.get("Cache-Control", "").lower()


__all__ = ["JSON_SERIALIZER", "CachedSession", "cache_backend", "cache_key", "session_kwargs"]
