"""Authorisers: where a profile's credentials come from, and what a 401 does to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from worker.profiles import AuthConfig, Profile

if TYPE_CHECKING:
    import redis

    from worker.keys import Keys


@dataclass(frozen=True)
class Credentials:
    """Headers that authorise a request, and which version of the token they carry."""

    headers: dict[str, str] = field(default_factory=dict)
    version: str | None = None


class Authoriser(Protocol):
    def credentials(self) -> Credentials:
        """Headers to send now; raises ``AuthError`` when none can be had."""
        ...

    def renew(self, rejected: Credentials) -> bool:
        """The API refused ``rejected``: get newer credentials; False when none can exist."""
        ...


class NoAuth:
    """A profile whose API needs no credentials."""

    def credentials(self) -> Credentials:
        return Credentials()

    def renew(self, rejected: Credentials) -> bool:
        return False


class StaticBearer:
    """A fixed token from the environment: nothing to renew when the API refuses it."""

    def __init__(self, config: AuthConfig) -> None:
        if config.token is None:
            raise ValueError("a bearer profile needs its token")
        headers = {name: value.reveal() for name, value in config.headers if value is not None}
        headers[config.header_key] = config.header_prefix + config.token.reveal()
        self._credentials = Credentials(headers=headers, version="static")

    def credentials(self) -> Credentials:
        return self._credentials

    def renew(self, rejected: Credentials) -> bool:
        return False


def renewal_lease_s(profile: Profile) -> float:
    """Seconds one process may hold a profile's token renewal: one token request, with room."""
    return 2 * profile.timeout_s + 5.0


def make_authoriser(
    profile: Profile, client: redis.Redis | None = None, keys: Keys | None = None
) -> Authoriser:
    """The authoriser of a profile; ``oauth2`` needs the Redis that holds the shared token."""
    if profile.auth.kind == "bearer":
        return StaticBearer(profile.auth)
    if profile.auth.kind == "oauth2":
        from worker.keys import Keys
        from worker.oauth import OAuth2Authoriser
        from worker.tokens import TokenStore

        if client is None:
            raise ValueError(f"profile {profile.name!r}: an oauth2 authoriser needs a Redis client")
        store = TokenStore(client, keys or Keys(), profile.name, lease_s=renewal_lease_s(profile),
                           wait_s=profile.timeout_s + 5.0)
        return OAuth2Authoriser(profile, store)
    return NoAuth()
