"""The API `reqworker demo` syncs from: OAuth, a rate limit, latency and trouble on purpose.

- ``POST /oauth/token``: the client-credentials grant (client id and secret by HTTP Basic
  or in the form). Tokens last ``TOKEN_LIFETIME_S``; every ``/v1`` request without a live
  one gets a 401.
- ``GET /v1/tracks/<n>``: one track. Some fail, some fail a few times first, as ``plan``
  says, so the demo's outcome is the same on every run.
- ``GET /v1/playlists/<p>/tracks?offset=&limit=``: a playlist, a page at a time, with the
  absolute URL of the next page in ``"next"`` (null on the last page).

Beyond ``RATE_PER_S`` requests a second (with ``RATE_TOLERANCE_S`` of slack for a busy
machine's jitter) the API answers 429 with ``Retry-After: 1``, as a real one would.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from urllib.parse import parse_qs

from producer.demo.loopback import Hit, Reply

TOKEN_PATH = "/oauth/token"
TRACKS = "/v1/tracks/"
PLAYLISTS = "/v1/playlists/"
TOKEN_LIFETIME_S = 20
RATE_PER_S = 150
RATE_TOLERANCE_S = 0.5
PAGE_SIZE = 50


def plan(n: int) -> list[int]:
    """What /v1/tracks/<n> answers, attempt after attempt (the last answer repeats)."""
    if n % 25 == 0:
        return [404]  # no such track: fails at once
    if n % 50 == 17:
        return [503]  # always down: fails when its 4 retries are spent
    if n % 500 == 9:
        return [429, 200]  # rate limited once, with Retry-After: 1 (the whole profile waits)
    if n % 20 == 3:
        return [500, 200]
    if n % 20 == 6:
        return [502, 503, 200]
    return [200]


def playlist_length(p: int) -> int:
    """How many tracks playlist ``p`` (from 1) holds: ``p + 1`` pages of ``PAGE_SIZE``."""
    return PAGE_SIZE * p + 20


def playlist_pages(p: int) -> int:
    return -(-playlist_length(p) // PAGE_SIZE)


class DemoAPI:
    """The demo API's handler for ``LoopbackAPI``; counts what it answered for the summary."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self._client = (client_id, client_secret)
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self._tokens: dict[str, float] = {}  # access token -> when it expires (monotonic)
        self._tat = 0.0  # the rate limit's theoretical arrival time (GCRA)
        #: /v1 answers by status code.
        self.served: Counter[int] = Counter()
        #: 429s because a request came beyond the rate limit (not the planned ones).
        self.over_limit = 0
        self.tokens_issued = 0

    def __call__(self, hit: Hit) -> Reply | None:
        if hit.path == TOKEN_PATH:
            return self._token(hit)
        if not hit.path.startswith("/v1/"):
            return None
        reply = self._guard(hit) or self._answer(hit)
        with self._lock:
            self.served[reply.status] += 1
        return reply

    def _token(self, hit: Hit) -> Reply:
        form = {k: v[0] for k, v in parse_qs(hit.body.decode(errors="replace")).items()}
        if hit.method != "POST" or form.get("grant_type") != "client_credentials":
            return Reply(400, json={"error": "unsupported_grant_type"})
        basic = hit.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            user, _, password = base64.b64decode(basic[6:]).decode(errors="replace").partition(":")
        else:
            user, password = form.get("client_id", ""), form.get("client_secret", "")
        if not (secrets.compare_digest(user, self._client[0])
                and secrets.compare_digest(password, self._client[1])):
            return Reply(401, json={"error": "invalid_client"})
        access = f"demo-{secrets.token_urlsafe(18)}"
        with self._lock:
            self._tokens[access] = time.monotonic() + TOKEN_LIFETIME_S
            self.tokens_issued += 1
        body = {"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S}
        return Reply(json=body, delay_s=0.05)

    def _guard(self, hit: Hit) -> Reply | None:
        """401 without a live token, 429 beyond the rate limit; None lets the request in."""
        token = hit.headers.get("Authorization", "").removeprefix("Bearer ")
        now = time.monotonic()
        with self._lock:
            if self._tokens.get(token, 0.0) <= now:
                return _error(401, "invalid or expired access token")
            tat = max(self._tat, now)
            if tat - now > RATE_TOLERANCE_S:
                self.over_limit += 1
                return _error(429, f"rate limit of {RATE_PER_S}/s exceeded", retry_after=True)
            self._tat = tat + 1 / RATE_PER_S
        return None

    def _answer(self, hit: Hit) -> Reply:
        if hit.path.startswith(PLAYLISTS) and hit.path.endswith("/tracks"):
            return self._playlist(hit)
        number = hit.path.removeprefix(TRACKS)
        if not hit.path.startswith(TRACKS) or not number.isdigit():
            return _error(404, f"no such path {hit.path}")
        n = int(number)
        steps = plan(n)
        with self._lock:
            status = steps[min(self._attempts[hit.path], len(steps) - 1)]
            self._attempts[hit.path] += 1
        delay = 0.002 + 0.002 * (n % 4)
        if status == 200:
            return Reply(json=_track(n), delay_s=delay)
        if status == 404:
            return _error(404, "no such track", delay)
        return _error(status, "please try again later", delay, retry_after=status == 429)

    def _playlist(self, hit: Hit) -> Reply:
        p = hit.path.removeprefix(PLAYLISTS).removesuffix("/tracks")
        query = {k: v[0] for k, v in parse_qs(hit.query).items()}
        try:
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
        except ValueError:
            return _error(400, "offset and limit must be whole numbers")
        if not p.isdigit() or not 1 <= int(p) <= 1000:
            return _error(404, "no such playlist")
        total = playlist_length(int(p))
        items = [_track(1000 * int(p) + i) for i in range(offset, min(offset + limit, total))]
        after = offset + limit
        next_url = (f"http://{hit.headers.get('Host')}{PLAYLISTS}{p}/tracks"
                    f"?offset={after}&limit={limit}") if after < total else None
        body = {"offset": offset, "limit": limit, "total": total, "items": items, "next": next_url}
        return Reply(json=body, delay_s=0.01)


def _track(n: int) -> dict[str, object]:
    return {"id": n, "title": f"Track {n}", "duration_ms": 150_000 + 977 * (n % 97)}


def _error(status: int, message: str, delay_s: float = 0.0, *, retry_after: bool = False) -> Reply:
    headers = {"Retry-After": "1"} if retry_after else {}
    return Reply(status, json={"error": {"status": status, "message": message}}, headers=headers,
                 delay_s=delay_s)
