"""One HTTP attempt: per-thread sessions per profile, and credentials kept under base_url."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin

import redis
import requests
from requests_cache import CachedSession

from worker.bounds import BoundedAdapter, admitting, attempt_deadline
from worker.cache import cache_backend, session_kwargs
from worker.jobs import Job
from worker.keys import Keys
from worker.profiles import Profile
from worker.redirects import redirect_refusal, resends_body
from worker.urls import is_under_base


class _KeepsCredentialsHome:
    """Follows only the redirects the profile allows, and drops its credential headers from
    any redirect that leaves its base_url.

    requests drops ``Authorization`` only when the host changes, and never a custom
    header such as ``X-API-Key``.
    """

    profile: Profile

    def get_redirect_target(self, resp: Any) -> str | None:
        """The redirect to follow, or None when ``follow_redirects`` forbids it (the 3xx stays)."""
        target: str | None = super().get_redirect_target(resp)  # type: ignore[misc]
        if target is not None and redirect_refusal(urljoin(resp.url, target), self.profile,
                                                   resends_body=resends_body(resp)):
            return None
        return target

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[misc]
        if not is_under_base(prepared_request.url, self.profile.base_url):
            for name in self.profile.credential_headers:
                prepared_request.headers.pop(name, None)


def _settle_environment(session: requests.Session, profile: Profile) -> None:
    """Read proxy and CA settings from the environment once, not on every request.

    Also bounds every attempt (``max_body``, the whole-attempt ``timeout``) and keeps no
    cookie: a job's session is shared with the next job of the profile, maybe another
    producer's.
    """
    session.proxies.update(requests.utils.get_environ_proxies(profile.base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    adapter = BoundedAdapter(profile.max_body)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))


class PlainSession(_KeepsCredentialsHome, requests.Session):
    def __init__(self, profile: Profile) -> None:
        super().__init__()
        self.profile = profile
        _settle_environment(self, profile)


class ProfileCachedSession(_KeepsCredentialsHome, CachedSession):
    def __init__(self, profile: Profile, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.profile = profile
        _settle_environment(self, profile)


class Sessions:
    """HTTP sessions for this process: one cached and one plain per profile and thread."""

    def __init__(self, profiles: Mapping[str, Profile], cache: redis.Redis[bytes], keys: Keys) -> None:
        self._profiles = profiles
        self._backends = {name: cache_backend(p, cache, keys) for name, p in profiles.items()}
        self._local = threading.local()

    def for_job(self, job: Job) -> requests.Session:
        sessions: dict[tuple[str, bool], requests.Session] | None
        sessions = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        slot = (job.api, job.uses_cache)
        session = sessions.get(slot)
        if session is None:
            profile = self._profiles[job.api]
            if job.uses_cache:
                kwargs = session_kwargs(profile, self._backends[job.api])
                session = ProfileCachedSession(profile, **kwargs)
            else:
                session = PlainSession(profile)
            sessions[slot] = session
        return session


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt gave: a response or the exception, and how long it took."""

    response: requests.Response | None
    error: requests.RequestException | None
    elapsed_ms: int

    @property
    def from_cache(self) -> bool:
        """True when the answer came from the shared cache (an only-if-cached miss does not)."""
        if getattr(self.response, "from_cache", False) is not True:
            return False
        # requests-cache answers an only-if-cached miss with a 504 it marks as cached;
        # a real 504 is never stored (see worker.cache allowable_codes).
        return self.response is not None and self.response.status_code != 504


def send(
    session: requests.Session,
    job: Job,
    profile: Profile,
    auth: Mapping[str, str],
    *,
    only_if_cached: bool = False,
    admit: Callable[[], None] | None = None,
) -> Attempt:
    """Make one attempt at ``job``; never raises for HTTP or network failures.

    With ``only_if_cached`` nothing goes to the network: a miss is a 504 not from cache.
    ``admit`` runs just before the request goes to the network (not for a cache hit),
    and may raise ``worker.bounds.HeldBack``, which this lets through.
    """
    kwargs: dict[str, Any] = {
        "params": job.params or None,
        "json": job.json,
        "data": job.data,
        "headers": {**job.headers, **auth},
        "timeout": profile.timeout_s,
        "allow_redirects": job.method != "HEAD",
    }
    if isinstance(session, CachedSession):
        if job.refresh:
            kwargs["force_refresh"] = True
        elif only_if_cached:
            kwargs["only_if_cached"] = True
    started = time.monotonic()
    try:
        if only_if_cached:
            response = session.request(job.method, job.url, **kwargs)
        else:
            with attempt_deadline(profile.timeout_s) as deadline, admitting(admit):
                try:
                    response = session.request(job.method, job.url, **kwargs)
                except (requests.RequestException, OSError):
                    deadline.check()  # a socket the deadline shut down: say so
                    raise
    except requests.RequestException as exc:
        return Attempt(None, exc, _ms_since(started))
    return Attempt(response, None, _ms_since(started))


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def response_body(response: requests.Response) -> Any:
    """The answer's JSON, else its text (``None`` when there is no body)."""
    if not response.content:
        return None
    try:
        return response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to parse
        return response.text
