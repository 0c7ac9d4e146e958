"""What an API's rate-limit headers say: requests remaining and seconds until the budget resets."""

from __future__ import annotations

import re
from collections.abc import Mapping

#: A ``Reset`` above this is an epoch timestamp in seconds, not a delta.
EPOCH_S_FLOOR = 1e9
#: A ``Reset`` above this is an epoch timestamp in milliseconds.
EPOCH_MS_FLOOR = 1e12
#: A number in a rate-limit header: digits, perhaps a decimal part; "1e300", "nan" and
#: "-1" are not numbers an API sends, so they count as absent.
_HEADER_NUMBER = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,6})?$")


def parse_ratelimit_headers(
    headers: Mapping[str, str], now_s: float
) -> tuple[int | None, float | None]:
    """Remaining requests and seconds to reset from an API's rate-limit headers.

    Reads ``RateLimit-Remaining``/``-Reset``, the ``X-RateLimit-`` variants and the
    combined ``RateLimit: remaining=0, reset=30`` (or ``r=0;t=30``) header. A reset above
    ~1e9 is an epoch timestamp (GitHub's style), not a delta.
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    remaining = _first_number(lower, ("ratelimit-remaining", "x-ratelimit-remaining"))
    reset = _first_number(lower, ("ratelimit-reset", "x-ratelimit-reset"))
    if "ratelimit" in lower:
        fields = _combined_fields(lower["ratelimit"])
        remaining = remaining if remaining is not None else fields.get("remaining", fields.get("r"))
        reset = reset if reset is not None else fields.get("reset", fields.get("t"))
    if reset is not None:
        if reset > EPOCH_MS_FLOOR:
            reset = reset / 1000.0 - now_s
        elif reset > EPOCH_S_FLOOR:
            reset = reset - now_s
        reset = max(reset, 0.0)
    return (None if remaining is None else max(int(remaining), 0)), reset


def _number(text: str) -> float | None:
    # Draft headers may list several windows ("0, 100;w=60"): the first is the binding one.
    head = text.split(",")[0].split(";")[0].strip().strip('"')
    return float(head) if _HEADER_NUMBER.match(head) else None


def _first_number(lower: Mapping[str, str], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in lower and (value := _number(lower[name])) is not None:
            return value
    return None


def _combined_fields(text: str) -> dict[str, float]:
    fields: dict[str, float] = {}
    for part in text.replace(";", ",").split(","):
        name, sep, value = part.partition("=")
        number = _number(value) if sep else None
        if number is not None:
            fields.setdefault(name.strip().lower(), number)
    return fields
