"""Pure rules for URLs, hosts and header names, shared by the profiles file and the job contract."""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import SplitResult, unquote, urlsplit

HTTP_SCHEMES = ("http", "https")
#: A header name: an RFC 9110 token.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in HTTP_SCHEMES and bool(parts.hostname)


def has_user_info(url: str) -> bool:
    """Whether ``url`` carries a user name or a password (``user:pass@host``)."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return "@" in url


def is_loopback(address: str) -> bool:
    """Whether a host or listening address stays on this machine ('' means every address)."""
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def _split_base(base_url: str) -> tuple[SplitResult, int | None]:
    """A profile's base_url taken apart once, not for every job."""
    parts = urlsplit(base_url)
    return parts, parts.port


def is_under_base(url: str, base_url: str) -> bool:
    """True when ``url`` lies under ``base_url`` (same scheme, host and port; path below)."""
    return under_base_problem(url, base_url) is None


def under_base_problem(url: str, base_url: str) -> str | None:
    """Why ``url`` does not lie under ``base_url``, or None when it does."""
    if any(ch in url for ch in "\\\r\n\t ") or any(ord(ch) < 32 for ch in url):
        return "must not contain spaces, backslashes or control characters"
    base, base_port = _split_base(base_url)
    try:
        got = urlsplit(url)
        got_port = got.port
    except ValueError:
        return f"{url!r} is not a valid URL"
    if "@" in got.netloc:
        return "must not carry a user name or password"
    if got.fragment:
        return "must not have a fragment (#...)"
    default_port = _DEFAULT_PORTS.get(base.scheme.lower())
    if (got.scheme.lower() != base.scheme.lower()
            or (got.hostname or "").lower() != (base.hostname or "").lower()
            or (got_port or default_port) != (base_port or default_port)):
        return _outside(url, base_url)
    if any(_sneaky(seg) for seg in got.path.split("/")):
        return ("must not contain '.' or '..' segments (however encoded, or with ';' parameters) "
                "or encoded slashes")
    base_path = base.path.rstrip("/")
    if got.path != base_path and not got.path.startswith(base_path + "/"):
        return _outside(url, base_url)
    return None


def _outside(url: str, base_url: str) -> str:
    return f"{url!r} is not under the profile's base_url {base_url!r}"


def _sneaky(segment: str) -> bool:
    """True for a path segment some server would take as '.' or '..', or as more than one.

    Servers differ in what they decode: one decodes twice (``%252e``), Tomcat drops
    ``;parameters`` (``..;``). A segment is judged by every reading of it.
    """
    readings = [segment]
    for _ in range(3):
        decoded = unquote(readings[-1])
        if decoded == readings[-1]:
            break
        readings.append(decoded)
    for text in readings:
        if set(text) & {"/", "\\"} or text.split(";")[0] in (".", "..") or text in (".", ".."):
            return True
    return False
