"""Authorisers: where a profile's credentials come from, and what a 401 does to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from worker.profiles import AuthConfig, Profile


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
        value = config.header_prefix + config.token.reveal()
        self._credentials = Credentials(headers={config.header_key: value}, version="static")

    def credentials(self) -> Credentials:
        return self._credentials

    def renew(self, rejected: Credentials) -> bool:
        return False


def make_authoriser(profile: Profile) -> Authoriser:
    if profile.auth.kind == "bearer":
        return StaticBearer(profile.auth)
    return NoAuth()
