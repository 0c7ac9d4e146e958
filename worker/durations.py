"""Parsing of human durations ("28d", "90s", "1.5h") and rates ("10/s", "600/m")."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)


def parse_duration_s(value: str | int | float) -> float:
    """Seconds in a duration given as a number of seconds or a string like "28d"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90, \"90s\", \"15m\", \"12h\" or \"28d\"")
    return float(match.group(1)) * _UNITS_S[match.group(2).lower()]


def parse_size(value: str | int) -> int:
    """Bytes in a size given as a whole number of bytes or a string like "10MiB" or "500kB"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{value!r} must be 1 byte or more")
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{value!r} is not a size like 10485760, \"512KiB\" or \"10MiB\"")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]


@dataclass(frozen=True)
class Rate:
    """An allowance of ``count`` requests every ``period_s`` seconds."""

    count: float
    period_s: float

    @property
    def per_second(self) -> float:
        return self.count / self.period_s


def parse_rate(value: str) -> Rate:
    """A rate such as "10/s", "600/m", "5/2s" or "1000/h"."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a rate like \"10/s\", \"600/m\" or \"1000/h\"")
    count = float(match.group(1))
    multiple = float(match.group(2)) if match.group(2) else 1.0
    period_s = multiple * _UNITS_S[match.group(3).lower()]
    if count <= 0 or period_s <= 0:
        raise ValueError(f"{value!r} must allow more than 0 requests in more than 0 seconds")
    return Rate(count=count, period_s=period_s)
