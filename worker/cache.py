"""The shared GET cache: requests-cache on Redis, one namespace per profile, JSON only."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import redis
from requests_cache import CachedSession
from requests_cache.backends.redis import RedisCache
from requests_cache.serializers.pipeline import SerializerPipeline, Stage
from requests_cache.serializers.preconf import json_preconf_stage

from worker.keys import Keys
from worker.profiles import Profile

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


def session_kwargs(profile: Profile, backend: RedactingRedisCache) -> dict[str, Any]:
    """Settings of a profile's ``CachedSession``: GET only, the profile's expiry."""
    return {
        "backend": backend,
        "expire_after": profile.cache_expire_s,
        "allowable_methods": ("GET",),
        "allowable_codes": (200, 203, 300, 301, 308),
        "ignored_parameters": profile.credential_headers,
        "match_headers": False,
        "stale_if_error": False,
    }


__all__ = ["JSON_SERIALIZER", "CachedSession", "cache_backend", "session_kwargs"]
