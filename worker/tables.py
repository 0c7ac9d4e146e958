"""Reading the tables of ``apis.toml``: ``${VAR}`` expansion, numbers, errors that name the key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ProfileError(ValueError):
    """The profiles file cannot be used; the message names the file and the setting."""


@dataclass
class TableReader:
    """What every table of one profiles file is read with: its environment and its name."""

    env: Mapping[str, str]
    source: str
    #: False in the producer's view: secrets are checked but their variables not needed.
    with_secrets: bool

    def fail(self, where: str, message: str) -> ProfileError:
        return ProfileError(f"{self.source}: {where}: {message}")

    def expand(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, not {type(value).__name__}")

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.env:
                raise self.fail(where, f"environment variable {name} is not set")
            return self.env[name]

        return _VAR.sub(one, value)

    @staticmethod
    def variables(value: str) -> list[str]:
        """Names of the ``${VAR}`` a setting's value uses."""
        return _VAR.findall(value)

    def number(self, table: Mapping[str, Any], key: str, where: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{where}.{key}", f"must be a number, not {value!r}")
        return float(value)

    def whole(
        self, table: Mapping[str, Any], key: str, where: str, default: int | None, *, minimum: int
    ) -> int | None:
        value = table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{where}.{key}", f"must be a whole number {minimum} or more, not {value!r}")
        return value
