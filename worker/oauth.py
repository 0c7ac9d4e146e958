"""The ``oauth2`` authoriser: one token for the whole fleet, from a profile's token endpoint."""

from __future__ import annotations

import json
import logging
import math
import stat
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import requests

from worker.auth import Credentials
from worker.errors import AuthError
from worker.profiles import AuthConfig, Profile
from worker.secret import Secret, flaw, scrub
from worker.tokens import Token, TokenStore
from worker.verdicts import retryable_status

log = logging.getLogger("reqworker.oauth")


class TokenEndpointError(AuthError):
    """The token endpoint refused or failed a grant; ``oauth_error`` is its error code."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 oauth_error: str | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.oauth_error = oauth_error


class TokenEndpoint:
    """The grants a profile can ask its ``token_url`` for."""

    def __init__(self, profile: str, config: AuthConfig, timeout_s: float = 30.0) -> None:
        if not config.token_url or not config.client_id:
            raise ValueError(f"profile {profile!r}: an oauth2 profile needs token_url and client_id")
        self.profile = profile
        self.config = config
        self.timeout_s = timeout_s

    def client_credentials(self) -> Token:
        form = {"grant_type": "client_credentials"}
        if self.config.scope:
            form["scope"] = self.config.scope
        return self._grant(form)

    def refresh(self, refresh_token: Secret) -> Token:
        """A new access token; the old refresh token is kept when the server sends none."""
        token = self._grant({"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()})
        return token if token.refresh_token else Token(
            access_token=token.access_token, refresh_token=refresh_token,
            expires_at=token.expires_at, obtained_at=token.obtained_at, scope=token.scope)

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> Token:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self._grant(form)

    def _grant(self, form: dict[str, str]) -> Token:
        secret = self.config.client_secret
        auth = None
        if secret is not None and self.config.client_auth == "basic":
            auth = (self.config.client_id or "", secret.reveal())
        else:
            form = {**form, "client_id": self.config.client_id or ""}
            if secret is not None:
                form["client_secret"] = secret.reveal()
        where = f"profile {self.profile!r}: token endpoint {_shown(self.config.token_url or '')}"
        grant = form["grant_type"]
        started = time.time()
        try:
            response = requests.post(self.config.token_url or "", data=form, auth=auth,
                                     headers={"Accept": "application/json"},
                                     timeout=self.timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            raise TokenEndpointError(f"{where} unreachable ({grant}): {type(exc).__name__}",
                                     retryable=True) from None
        status = response.status_code
        body = _json(response)
        # An answer that may pass (``worker.verdicts``): the job is retried with backoff.
        if retryable_status(status):
            raise TokenEndpointError(f"{where} answered HTTP {status} ({grant}); try again later",
                                     retryable=True, status=status)
        if not 200 <= status < 300:
            code = body.get("error") if isinstance(body.get("error"), str) else None
            detail = str(body.get("error_description") or code or response.reason or "")[:200]
            # The endpoint's own words are stored and logged: none of the profile's secrets.
            sent = [form.get(k, "") for k in ("client_secret", "refresh_token", "code", "code_verifier")]
            detail = scrub(detail, [*self.config.secret_values, *sent])
            raise TokenEndpointError(f"{where} refused the {grant} grant: HTTP {status} {detail}".rstrip(),
                                     retryable=False, status=status, oauth_error=code)
        try:
            return parse_token(body, started)
        except ValueError as exc:
            raise TokenEndpointError(f"{where} answered {status} ({grant}) {exc}",
                                     retryable=False) from None


def parse_token(fields: Any, now: float) -> Token:
    """The token in a token endpoint's answer (RFC 6749 5.1) or a token file, obtained at ``now``.

    Raises ``ValueError`` saying what is wrong with it (never a value).
    """
    if not isinstance(fields, Mapping):
        raise ValueError("that is not a JSON object")
    access = fields.get("access_token")
    if not isinstance(access, str) or not access:
        raise ValueError("without an access_token")
    refresh = fields.get("refresh_token")
    for name, value in (("access_token", access), ("refresh_token", refresh)):
        problem = flaw(value) if isinstance(value, str) else None
        if problem:
            raise ValueError(f"with an unusable {name}: it {problem}")
    expires_in = _seconds(fields.get("expires_in"))
    if expires_in is not None and not (math.isfinite(expires_in) and expires_in >= 0):
        raise ValueError("with expires_in that is not a finite number of seconds 0 or more")
    return Token(
        access_token=Secret(access),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        expires_at=now + expires_in if expires_in is not None else None,
        obtained_at=now,
        scope=fields.get("scope") if isinstance(fields.get("scope"), str) else None,
    )


def _seconds(value: Any) -> float | None:
    """A number of seconds given as a number or a string (NaN when it is neither); None when not given."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return math.nan
    try:
        return float(value)
    except (ValueError, OverflowError):
        return math.nan


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _shown(url: str) -> str:
    """The URL without query or fragment: enough to say which endpoint, nothing more."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def token_file_problem(path: str | Path) -> str | None:
    """Why a token file must not be used: anyone but its owner may read it (None when fine)."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # a missing file seeds nothing; read_token_file says so
    if mode & 0o077:
        return (f"token_file {path} may be read by group or others (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}`")
    return None


def read_token_file(path: str | Path) -> Token | None:
    """A token saved as JSON: the fields of a token endpoint's answer (``expires_in`` counts
    from the file's modification time), or ``expires_at`` (epoch seconds or ISO 8601)."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        saved_at = path.stat().st_mtime
    except (OSError, ValueError) as exc:
        log.warning("token file %s cannot be used: %s", path, type(exc).__name__)
        return None
    try:
        token = parse_token(data, saved_at)
        if data.get("expires_at") is not None:
            token = replace(token, expires_at=_expires_at(data["expires_at"]))
    except ValueError as exc:
        log.warning("token file %s cannot be used: a token %s", path, exc)
        return None
    return token


def _expires_at(value: Any) -> float:
    """When a saved token expires, from epoch seconds or an ISO 8601 time; raises ``ValueError``."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except (ValueError, OverflowError):
            pass
    seconds = _seconds(value)
    if seconds is None or not math.isfinite(seconds):
        raise ValueError("with expires_at that is neither epoch seconds nor an ISO 8601 time")
    return seconds


class OAuth2Authoriser:
    """Credentials from the profile's shared token in Redis, renewed single-flight."""

    def __init__(self, profile: Profile, store: TokenStore, endpoint: TokenEndpoint | None = None) -> None:
        self.profile = profile
        self.config = profile.auth
        self.store = store
        self.endpoint = endpoint or TokenEndpoint(profile.name, profile.auth, profile.timeout_s)
        self._seeded = self.config.token_file is None

    def credentials(self) -> Credentials:
        try:
            token = self.store.load()
            if token is None or not token.usable(self.config.test_expiry_s, self.store.clock()):
                token = self.store.obtain(token.version if token else 0, self._renew)
        except redis.RedisError as exc:
            raise AuthError(f"profile {self.profile.name!r}: the token store in Redis is unreachable: "
                            f"{type(exc).__name__}", retryable=True) from None
        return self.credentials_for(token)

    def renew(self, rejected: Credentials) -> bool:
        """Replace the refused version (unless another process has); True when newer exists."""
        version = _version(rejected)
        try:
            try:
                self.store.obtain(version, self._renew)
                return True
            except AuthError as exc:
                log.warning("%s", exc)
                # Nobody may use the refused token again; credentials() will renew it.
                self.store.invalidate(version)
                return exc.retryable
        except redis.RedisError as exc:
            log.warning("profile %s: token store unreachable: %s", self.profile.name, type(exc).__name__)
            return True

    def credentials_for(self, token: Token) -> Credentials:
        return Credentials.for_token(self.config, token.access_token, str(token.version))

    def passes_test(self, token: Token) -> bool:
        """Whether ``test_url`` answers ``test_status`` to this token (True without a test)."""
        if not self.config.test_url:
            return True
        try:
            response = requests.get(self.config.test_url, headers=self.credentials_for(token).headers,
                                    timeout=self.profile.timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            raise AuthError(f"profile {self.profile.name!r}: token test {_shown(self.config.test_url)} "
                            f"unreachable: {type(exc).__name__}", retryable=True) from None
        return response.status_code in self.config.test_status

    def _renew(self, current: Token | None) -> Token:
        """Runs under the renewal lease: seed, refresh or fetch a new token."""
        name = self.profile.name
        if current is None and not self._seeded:
            problem = token_file_problem(self.config.token_file or "")
            if problem:
                raise AuthError(f"profile {name!r}: {problem}", retryable=False)
            self._seeded = True
            seeded = read_token_file(self.config.token_file or "")
            if seeded is not None:
                if seeded.usable(self.config.test_expiry_s, self.store.clock()) and self.passes_test(seeded):
                    log.info("profile %s: seeding the shared token from %s", name, self.config.token_file)
                    return seeded
                current = seeded
        if current is not None and current.refresh_token is not None:
            try:
                return self.endpoint.refresh(current.refresh_token)
            except TokenEndpointError as exc:
                if exc.retryable:
                    raise
                if self.config.auth_url:
                    raise AuthError(f"{exc}; run `reqworker auth {name}` again", retryable=False) from None
                log.warning("%s; asking for a new token instead", exc)
        if self.config.auth_url:
            raise AuthError(f"profile {name!r} has no usable token: run `reqworker auth {name}` to "
                            "authorise it in a browser", retryable=False)
        return self.endpoint.client_credentials()


def _version(credentials: Credentials) -> int:
    try:
        return int(credentials.version or 0)
    except ValueError:
        return 0
