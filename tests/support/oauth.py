"""A fake OAuth provider on loopback, and builders of oauth2 profiles and authorisers."""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import redis

from tests.support.loopback import Hit, LoopbackAPI, Reply
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


def authoriser(profile: Profile, client: redis.Redis[bytes], keys: Keys, **store: Any) -> OAuth2Authoriser:
    """An authoriser as one worker process would have it."""
    return OAuth2Authoriser(profile, TokenStore(client, keys, profile.name, **store))


def every_value(client: redis.Redis[bytes]) -> dict[str, str]:
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


#: Seconds a hanging token request waits for its release at most (a hang guard).
HANG_S = 60.0


@dataclass
class Realm:
    """One API and its token endpoint, under ``/<name>/`` of a ``FleetProvider``.

    The endpoint grants client-credentials tokens numbered from 1; the API (``/<name>/api/...``)
    answers 200 only to the newest token, and 401 to any other.
    """

    name: str
    expires_in: int = 600
    #: The API refuses token n (from 1) once it has accepted it this many times: the token
    #: "expires" at the server at a request the test chooses, not at a wall-clock time.
    accept_limit: dict[int, int] = field(default_factory=dict)
    #: Token requests (numbered from 1) that hang until ``release`` is set, then get a reset.
    hang: frozenset[int] = frozenset()
    #: What the token endpoint answers instead of a grant (e.g. 401 invalid_client).
    refusal: Reply | None = None
    #: Called with each token request and its number, before it is answered.
    on_token: Callable[[int, Hit], None] | None = None
    release: threading.Event = field(default_factory=threading.Event)
    issued: list[str] = field(default_factory=list)
    #: Requests the API accepted, by token number.
    accepted: Counter[int] = field(default_factory=Counter)
    #: Requests the API answered 401.
    refused: list[Hit] = field(default_factory=list)
    token_requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self, hit: Hit) -> Reply:
        with self._lock:
            self.token_requests += 1
            n = self.token_requests
        if self.on_token is not None:
            self.on_token(n, hit)
        if n in self.hang:
            self.release.wait(HANG_S)
            return Reply(reset=True)
        if self.refusal is not None:
            return self.refusal
        with self._lock:
            self.issued.append(f"{self.name}-access-{len(self.issued) + 1}-{secrets.token_hex(12)}")
            access = self.issued[-1]
        return Reply(json={"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in})

    def revoke(self) -> None:
        """The API refuses the newest token from now on, as if the provider revoked it."""
        with self._lock:
            n = len(self.issued)
            self.accept_limit[n] = self.accepted[n]

    def answer(self, hit: Hit) -> Reply:
        presented = hit.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            n = len(self.issued)
            good = n > 0 and presented == self.issued[-1] and \
                self.accepted[n] < self.accept_limit.get(n, math.inf)
            if good:
                self.accepted[n] += 1
            else:
                self.refused.append(hit)
        if not good:
            return Reply(401, json={"error": {"status": 401, "message": "invalid access token"}})
        return Reply(json={"path": hit.path, "token": n})


class FleetProvider:
    """Several realms (one per profile) on one loopback server."""

    def __init__(self, *realms: Realm) -> None:
        self.realms = {realm.name: realm for realm in realms}
        self.api = LoopbackAPI(fallback=self._answer)

    @property
    def url(self) -> str:
        return self.api.url

    def profile_toml(self, name: str, *, timeout: float = 5) -> str:
        """An ``apis.toml`` entry for realm ``name``, with client credentials from ``ENV``."""
        return f"""
[apis.{name}]
base_url = "{self.url}/{name}/api"
timeout = {timeout}
backoff = {{ start = 0.05, factor = 2, count = 3 }}

[apis.{name}.auth]
kind = "oauth2"
token_url = "{self.url}/{name}/token"
client_id = "${{CID}}"
client_secret = "${{CSECRET}}"
test_expiry = 1
"""

    def _answer(self, hit: Hit) -> Reply | None:
        name, _, rest = hit.path.lstrip("/").partition("/")
        realm = self.realms.get(name)
        if realm is None:
            return None
        if rest == "token" and hit.method == "POST":
            return realm.token(hit)
        if rest.startswith("api/"):
            return realm.answer(hit)
        return None
