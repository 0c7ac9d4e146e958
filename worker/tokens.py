"""The shared OAuth token in Redis: one JSON value per profile, renewed by one process at a time.

Every worker process on every host reads the same token. When it must be renewed, one
process takes a lease (``SET NX PX``) and calls the token endpoint; the others poll for
the new version instead of calling it too. A holder that dies blocks nobody for longer
than its lease. A failure at the token endpoint is remembered for a short while so the
others fail fast rather than calling it again.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import redis

from worker import metrics
from worker.errors import AuthError
from worker.keys import Keys
from worker.lua import script
from worker.secret import Secret, redact

log = logging.getLogger("reqworker.tokens")

#: Seconds a token is kept in Redis when it has a refresh token or no known expiry.
KEEP_REFRESHABLE_S = 30 * 86400
#: Seconds a refusal by the token endpoint (bad credentials) is remembered.
REJECTED_MEMO_S = 60.0
#: Seconds an unreachable or failing token endpoint is remembered.
UNAVAILABLE_MEMO_S = 5.0
#: First and longest pause, in seconds, between looks while another process renews.
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.25


@dataclass(frozen=True)
class Token:
    """An access token, what renews it, and when it stops working (seconds since the epoch)."""

    access_token: Secret
    refresh_token: Secret | None = None
    expires_at: float | None = None
    obtained_at: float = 0.0
    #: Grows with every token stored for the profile; a 401 names the version it refused.
    version: int = 0
    scope: str | None = None
    #: The API refused this token; it is kept only for its refresh token.
    invalid: bool = False

    def usable(self, margin_s: float, now: float) -> bool:
        """True when the token may be sent now and outlives ``margin_s``.

        The margin is capped at half the token's lifetime, so a server that grants
        tokens shorter than ``test_expiry`` does not cause a renewal on every use.
        """
        if self.invalid:
            return False
        if self.expires_at is None:
            return True
        lifetime_s = max(self.expires_at - self.obtained_at, 0.0)
        return self.expires_at - now > min(margin_s, lifetime_s / 2)

    def describe(self, now: float) -> str:
        """A line for logs and the terminal: the token redacted, its version and expiry."""
        left = "no known expiry" if self.expires_at is None else f"expires in {self.expires_at - now:.0f} s"
        return f"{redact(self.access_token.reveal())} (version {self.version}, {left})"

    def to_json(self) -> str:
        return json.dumps({
            "access_token": self.access_token.reveal(),
            "refresh_token": self.refresh_token.reveal() if self.refresh_token else None,
            "expires_at": self.expires_at, "obtained_at": self.obtained_at,
            "version": self.version, "scope": self.scope, "invalid": self.invalid,
        })

    @classmethod
    def from_json(cls, raw: str | bytes) -> Token | None:
        try:
            data = json.loads(raw)
            refresh = data.get("refresh_token")
            return cls(
                access_token=Secret(str(data["access_token"])),
                refresh_token=Secret(str(refresh)) if refresh else None,
                expires_at=_number(data.get("expires_at")),
                obtained_at=float(data.get("obtained_at") or 0.0),
                version=int(data.get("version") or 0),
                scope=data.get("scope"),
                invalid=bool(data.get("invalid")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


class TokenStore:
    """One profile's token in Redis, its renewal lease and its remembered failures."""

    def __init__(self, client: redis.Redis[bytes], keys: Keys, profile: str, *, lease_s: float = 65.0,
                 wait_s: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.profile = profile
        self.key = keys.token(profile)
        self.lock_key = keys.token_lock(profile)
        self.failure_key = keys.token_failure(profile)
        self.lease_s = lease_s
        #: Seconds a process waits for another's renewal before giving up (retryable): a
        #: job then backs off instead of holding its worker slot.
        self.wait_s = lease_s if wait_s is None else wait_s
        self.clock = clock
        self._release = script(client, "tokens_release.lua")

    def load(self) -> Token | None:
        raw = self.redis.get(self.key)
        return None if raw is None else Token.from_json(raw)

    def save(self, token: Token) -> Token:
        """Store ``token`` as a version newer than any stored; clears a remembered failure."""
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(self.key)
                    raw = cast("bytes | None", pipe.get(self.key))  # immediate while watching
                    old = Token.from_json(raw) if raw is not None else None
                    newest = old.version if old else 0
                    now = self.clock()
                    stored = replace(token, version=max(newest + 1, int(now * 1000)), invalid=False)
                    pipe.multi()
                    pipe.set(self.key, stored.to_json(), px=int(self._keep_s(stored, now) * 1000))
                    pipe.delete(self.failure_key)
                    pipe.execute()
                except redis.WatchError:
                    continue
            log.info("profile %s: stored token %s", self.profile, stored.describe(now))
            return stored

    def invalidate(self, version: int) -> bool:
        """Mark ``version`` refused, unless a newer one has replaced it already."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(self.key)
                raw = cast("bytes | None", pipe.get(self.key))  # immediate while watching
                token = Token.from_json(raw) if raw is not None else None
                if token is None or token.version != version or token.invalid:
                    return False
                pipe.multi()
                pipe.set(self.key, replace(token, invalid=True).to_json(), keepttl=True)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def failure(self) -> AuthError | None:
        """The token endpoint's recent failure, if one is remembered."""
        raw = self.redis.get(self.failure_key)
        if raw is None:
            return None
        data = json.loads(raw)
        return AuthError(f"{data['message']} (remembered: the token endpoint is not asked again "
                         "for a short while)", retryable=bool(data["retryable"]))

    def remember_failure(self, exc: AuthError) -> None:
        memo_s = UNAVAILABLE_MEMO_S if exc.retryable else REJECTED_MEMO_S
        value = json.dumps({"message": str(exc), "retryable": exc.retryable})
        self.redis.set(self.failure_key, value, px=int(memo_s * 1000))

    def obtain(self, stale_version: int, renew: Callable[[Token | None], Token]) -> Token:
        """A token newer than ``stale_version``: stored by another process, or renewed here.

        ``renew`` runs only while this process holds the lease; it gets the stored token
        (or None) and returns a new one, which is stored.
        """
        pause_s = POLL_FIRST_S
        deadline = time.monotonic() + self.wait_s
        while True:
            newer = self._newer_than(stale_version)
            if newer is not None:
                return newer
            lease = secrets.token_hex(16)
            if self.redis.set(self.lock_key, lease, nx=True, px=int(self.lease_s * 1000)):
                try:
                    return self._renew_holding(stale_version, renew)
                finally:
                    self._release(keys=[self.lock_key], args=[lease])
            if time.monotonic() > deadline:
                raise AuthError(f"profile {self.profile!r}: another worker has been renewing the "
                                f"token for over {self.wait_s:g} s", retryable=True)
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, POLL_MAX_S)

    def _newer_than(self, stale_version: int) -> Token | None:
        """The stored token if it is newer than ``stale_version``; raises a remembered failure."""
        current = self.load()
        if current is not None and current.version > stale_version:
            return current
        failed = self.failure()
        if failed is not None:
            raise failed
        return None

    def _renew_holding(self, stale_version: int, renew: Callable[[Token | None], Token]) -> Token:
        # Look again under the lease: the last holder may have finished just before.
        newer = self._newer_than(stale_version)
        if newer is not None:
            return newer
        try:
            token = renew(self.load())
        except AuthError as exc:
            self.remember_failure(exc)
            raise
        metrics.token_renewed(self.profile)
        return self.save(token)

    @staticmethod
    def _keep_s(token: Token, now: float) -> float:
        if token.refresh_token is not None or token.expires_at is None:
            return max(KEEP_REFRESHABLE_S, (token.expires_at or now) - now)
        return max(token.expires_at - now + 60.0, 1.0)
