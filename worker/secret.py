"""A credential that does not show itself in logs, reprs or tracebacks."""

from __future__ import annotations

from collections.abc import Iterable


class Secret:
    """Holds a credential; ``str``/``repr`` show only a redacted form."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({redact(self._value)!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def redact(value: str) -> str:
    """The form of a credential that may be logged: its first characters only."""
    if len(value) <= 8:
        return "***"
    return value[:3] + "***"


def flaw(value: str) -> str | None:
    """What makes a credential unusable as one header token, or None when it is clean.

    A trailing newline (a Kubernetes secret made from a file, a CRLF env file) would
    otherwise make every request fail with the whole value in the error text.
    """
    if any(ch.isspace() for ch in value):
        return "contains whitespace (a stray newline or space at either end or inside)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "contains control characters"
    return None


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in ``secrets`` replaced, longest first, by ``[REDACTED]``."""
    for value in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "[REDACTED]")
    return text
