"""The shared GET cache: requests-cache on Redis, one namespace per profile, JSON only."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from requests_cache import CachedSession
from requests_cache.backends.redis import RedisCache
from requests_cache.serializers.pipeline import SerializerPipeline, Stage
from requests_cache.serializers.preconf import json_preconf_stage

from worker.keys import Keys
from worker.profiles import Profile

#: Answers larger than this (bytes) are never cached: one entry must not crowd out thousands.
CACHE_MAX_BODY = 2 * 1024 * 1024

#: JSON, never pickle: whoever can write to Redis must not be able to run code here.
JSON_SERIALIZER = SerializerPipeline(
    [json_preconf_stage, Stage(dumps=partial(json.dumps, separators=(",", ":")), loads=json.loads)],
    name="reqworker-json",
    is_binary=False,
)


class RedactingRedisCache(RedisCache):
    """A Redis cache that also redacts credentials from the requests of redirects.

    requests-cache redacts the final request, but a redirected response keeps its
    history, and each step's request headers would otherwise be stored as sent.
    """

    def __init__(self, *args: Any, credential_headers: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credential_headers = credential_headers

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
        for step in response.history:
            for name in self._credential_headers:
                if name in step.request.headers:
                    step.request.headers[name] = "REDACTED"
        super().save_response(response, cache_key=cache_key, expires=expires)


def cache_backend(profile: Profile, connection: redis.Redis, keys: Keys) -> RedactingRedisCache:
    return RedactingRedisCache(
        namespace=keys.cache_namespace(profile.name),
        connection=connection,
        serializer=JSON_SERIALIZER,
        credential_headers=profile.credential_headers,
    )


def cache_key(request: Any, **_: Any) -> str:
    """What makes two GETs the same: method, URL with its query in a stable order, body.

    Credential headers never take part: two jobs of a profile share the answer.
    """
    parts = urlsplit(request.url or "")
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    identity = f"{request.method} {urlunsplit(parts._replace(query=query, fragment=''))}"
    return hashlib.blake2b(identity.encode() + b"\0" + body, digest_size=16).hexdigest()


def session_kwargs(profile: Profile, backend: RedactingRedisCache) -> dict[str, Any]:
    """Settings of a profile's ``CachedSession``: GET only, the profile's expiry."""
    return {
        "backend": backend,
        "expire_after": profile.cache_expire_s,
        "allowable_methods": ("GET",),
        "allowable_codes": (200, 203, 300, 301, 308),
        "ignored_parameters": profile.credential_headers,
        "match_headers": False,
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
