"""Authorisers: where a profile's credentials come from, and what a 401 does to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from worker.profiles import AuthConfig
from worker.secret import Secret


@dataclass(frozen=True)
class Credentials:
    """Headers that authorise a request, and which version of the token they carry."""

    headers: dict[str, str] = field(default_factory=dict)
    version: str | None = None

    @classmethod
    def for_token(cls, config: AuthConfig, token: Secret, version: str) -> Credentials:
        """The profile's static headers, and ``token`` in its header after its prefix."""
        headers = {name: value.reveal() for name, value in config.headers if value is not None}
        headers[config.header_key] = config.header_prefix + token.reveal()
        return cls(headers=headers, version=version)


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
        self._credentials = Credentials.for_token(config, config.token, "static")

    def credentials(self) -> Credentials:
        return self._credentials

    def renew(self, rejected: Credentials) -> bool:
        return False
