"""Where a redirect may lead: the profile's ``follow_redirects`` and the addresses never followed to.

A 302 to an internal address would otherwise put that host's answer in a job's result
and in the shared cache; a 307/308 would re-send the job's body there.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

from worker.profiles import Profile
from worker.redact import shown_url
from worker.urls import is_http_url, is_under_base


def redirect_refusal(target: str, profile: Profile, *, resends_body: bool = False) -> str | None:
    """Why a redirect to the absolute URL ``target`` may not be followed, or None when it may.

    ``resends_body``: the redirect (a 307 or 308) would send the job's body again.
    """
    policy = profile.follow_redirects
    target = target.split("#", 1)[0]
    if is_under_base(target, profile.base_url):
        return None
    if not is_http_url(target):
        return "it is not an http(s) URL"
    if policy == "base":
        return "it leaves base_url (follow_redirects = \"base\")"
    if resends_body:
        return "it would send the job's body again outside base_url"
    if policy != "any" and not any(is_under_base(target, prefix.rstrip("/")) for prefix in policy):
        return "it is under none of the follow_redirects prefixes"
    wanted = address_kinds(urlsplit(target).hostname or "")
    allowed = address_kinds(urlsplit(profile.base_url).hostname or "")
    if wanted - allowed:
        kind = sorted(wanted - allowed)[0]
        return f"it leads to a {kind} address, and base_url is not one"
    return None


def refused_redirect(response: Any, method: str, profile: Profile) -> str | None:
    """What a record says of a 3xx answer whose redirect was not followed (None otherwise)."""
    location = response.headers.get("Location") if 300 <= response.status_code < 400 else None
    if not location or method == "HEAD":
        return None
    target = urljoin(response.url or "", location)
    why = redirect_refusal(target, profile, resends_body=resends_body(response))
    return f"redirect to {shown_url(target)} not followed: {why}" if why else None


@functools.lru_cache(maxsize=1024)
def address_kinds(host: str) -> frozenset[str]:
    """The non-public kinds of address ``host`` is or resolves to: loopback, link-local, private.

    A name that does not resolve has none: the request to it fails on its own.
    """
    try:
        found = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            found = [ipaddress.ip_address(str(info[4][0]).split("%")[0])
                     for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError, ValueError):
            return frozenset()
    kinds = set()
    for address in found:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            kinds.add("loopback")
        elif address.is_link_local:
            kinds.add("link-local")
        elif not address.is_global:
            kinds.add("private")
    return frozenset(kinds)


def resends_body(response: Any) -> bool:
    """True when following this redirect would send the request's body again (307, 308)."""
    request = getattr(response, "request", None)
    return response.status_code in (307, 308) and getattr(request, "body", None) is not None
