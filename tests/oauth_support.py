"""A fake OAuth provider on loopback, and builders of oauth2 profiles and authorisers."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import redis

from producer.loopback_api import Hit, LoopbackAPI, Reply
from worker.keys import Keys
from worker.oauth import OAuth2Authoriser
from worker.profiles import Profile, parse_profiles
from worker.tokens import TokenStore

ENV = {"CID": "client-abc", "CSECRET": "s3cret-client-secret"}


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Provider:
    """Plays the provider: ``/token`` grants, ``/authorize`` consents, ``/api/me`` tests tokens."""

    expires_in: int = 3600
    #: Send a refresh token with client-credentials and code grants.
    refresh_on_grant: bool = True
    #: Send a new refresh token with a refresh grant (rotation).
    rotate_refresh: bool = False
    #: Seconds the token endpoint takes to answer.
    delay_s: float = 0.0
    #: Called with each token request, before it is answered.
    on_token: Callable[[Hit], None] | None = None
    issued: list[str] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    _codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.api = LoopbackAPI(fallback=self._answer)

    @property
    def url(self) -> str:
        return self.api.url

    def token_calls(self) -> int:
        return len(self.api.hits("/token"))

    def _answer(self, hit: Hit) -> Reply | None:
        if hit.path == "/token":
            return self._token(hit)
        if hit.path == "/authorize":
            return self._authorize(hit)
        if hit.path == "/api/me":
            token = hit.headers.get("Authorization", "").removeprefix("Bearer ")
            return Reply(200, json={"me": 1}) if token in self.issued else Reply(401, json={})
        return None

    def _token(self, hit: Hit) -> Reply:
        if self.on_token is not None:
            self.on_token(hit)
        form = {k: v[0] for k, v in parse_qs(hit.body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "authorization_code":
            redirect, challenge = self._codes.pop(form.get("code", ""), ("", ""))
            if redirect != form.get("redirect_uri") or s256(form.get("code_verifier", "")) != challenge:
                return Reply(400, json={"error": "invalid_grant"})
        with self._lock:
            self.forms.append(form)
            n = len(self.issued) + 1
            access = f"access-{n}-{secrets.token_hex(12)}"
            self.issued.append(access)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": self.expires_in}
        if (self.rotate_refresh if grant == "refresh_token" else self.refresh_on_grant):
            body["refresh_token"] = f"refresh-{n}-{secrets.token_hex(12)}"
        return Reply(json=body, delay_s=self.delay_s)

    def _authorize(self, hit: Hit) -> Reply:
        query = {k: v[0] for k, v in parse_qs(hit.query).items()}
        code = f"code-{secrets.token_hex(6)}"
        self._codes[code] = (query["redirect_uri"], query["code_challenge"])
        back = urlencode({"code": code, "state": query["state"]})
        return Reply(302, headers={"Location": f"{query['redirect_uri']}?{back}"})


def oauth_profile(provider: Provider, **auth: Any) -> Profile:
    """Profile ``svc`` on the provider, with client credentials from ``ENV``."""
    table = {"kind": "oauth2", "token_url": f"{provider.url}/token", "client_id": "${CID}",
             "client_secret": "${CSECRET}", "scope": "read", **auth}
    raw = {"apis": {"svc": {"base_url": f"{provider.url}/api", "auth": table}}}
    return parse_profiles(raw, ENV)["svc"]


def authoriser(profile: Profile, client: redis.Redis, keys: Keys, **store: Any) -> OAuth2Authoriser:
    """An authoriser as one worker process would have it."""
    return OAuth2Authoriser(profile, TokenStore(client, keys, profile.name, **store))


def every_value(client: redis.Redis) -> dict[str, str]:
    """Every key in the database and its contents, as text."""
    out: dict[str, str] = {}
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        else:
            value = client.dump(key)
        out[key.decode()] = repr(value)
    return out
