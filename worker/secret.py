"""A credential that does not show itself in logs, reprs or tracebacks."""

from __future__ import annotations


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
