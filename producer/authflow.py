"""``reqworker auth NAME``: a user authorises a profile in the browser; its token goes to Redis.

The authorisation-code grant with PKCE: the browser goes to the provider's consent page
and comes back to a one-shot HTTP server on localhost with a code, which is exchanged at
the token endpoint. The token is stored where every worker reads it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import click
import redis

from worker.errors import AuthError
from worker.keys import Keys
from worker.preflight import ServiceError, check_redis, redis_failure
from worker.profiles import Profile, ProfileError, load_profiles
from worker.redisconn import command_client
from worker.settings import Settings, SettingsError
from worker.tokens import Token, TokenStore

#: Opens a URL in the user's browser; a test plays the browser instead.
Opener = Callable[[str], Any]

_PAGE = "<!doctype html><title>reqworker</title><p>{}</p>"


@dataclass
class _Callback:
    """What came back to the redirect URI."""

    path: str
    state: str
    code: str | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer
    #: Seconds a connection may stay silent: one that never sends a request would otherwise
    #: hold the one-at-a-time server, so the browser's answer and the shutdown never get in.
    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        wanted = self.server.callback
        if parts.path != wanted.path or wanted.done.is_set():
            self._answer(404, "Not the reqworker callback.")
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if not secrets.compare_digest(query.get("state", ""), wanted.state):
            # Not the answer to our request (a stale tab, or someone else's link): keep waiting.
            self._answer(400, "This answer does not belong to the authorisation under way.")
            return
        wanted.code, wanted.error = query.get("code"), query.get("error")
        if wanted.code is None and wanted.error is None:
            wanted.error = "no code in the answer"
        ok = wanted.error is None
        self._answer(200 if ok else 400, "Authorised: you can close this tab." if ok
                     else f"Authorisation failed: {wanted.error}. See the terminal.")
        wanted.done.set()

    def _answer(self, status: int, text: str) -> None:
        body = _PAGE.format(text.replace("<", "&lt;")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _CallbackServer(HTTPServer):
    callback: _Callback


class _CallbackServer6(_CallbackServer):
    address_family = socket.AF_INET6


def authorise_in_browser(profile: Profile, store: TokenStore, *, opener: Opener | None,
                         timeout_s: float = 300.0, say: Callable[[str], Any] = print) -> Token:
    """Run the authorisation-code flow for ``profile`` and store the token it gives."""
    # Imported here so that registering the command costs the CLI no HTTP client.
    from worker.oauth import OAuth2Authoriser, TokenEndpoint

    config = profile.auth
    if config.kind != "oauth2" or not config.auth_url or not config.redirect_uri:
        raise AuthError(f"profile {profile.name!r} has no browser flow: it needs kind = \"oauth2\", "
                        "auth_url and redirect_uri (or redirect_port)", retryable=False)
    redirect = urlsplit(config.redirect_uri)
    callback = _Callback(path=redirect.path or "/", state=secrets.token_urlsafe(24))
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = {"client_id": config.client_id, "response_type": "code", "redirect_uri": config.redirect_uri,
             "state": callback.state, "code_challenge": challenge.decode(),
             "code_challenge_method": "S256"}
    if config.scope:
        query["scope"] = config.scope
    url = f"{config.auth_url}{'&' if '?' in config.auth_url else '?'}{urlencode(query)}"
    server = _serve(redirect.hostname or "localhost", redirect.port or 80, callback)
    try:
        say(f"Open this address to authorise profile {profile.name!r}:\n\n    {url}\n")
        if opener is not None:
            opener(url)
        if not callback.done.wait(timeout_s):
            raise AuthError(f"profile {profile.name!r}: no answer came back to {config.redirect_uri} "
                            f"within {timeout_s:g} s", retryable=False)
    finally:
        server.shutdown()
        server.server_close()
    if callback.error is not None:
        raise AuthError(f"profile {profile.name!r}: the provider refused: {callback.error}",
                        retryable=False)
    endpoint = TokenEndpoint(profile.name, config, profile.timeout_s)
    token = endpoint.exchange_code(callback.code or "", config.redirect_uri, verifier)
    authoriser = OAuth2Authoriser(profile, store, endpoint)
    if not authoriser.passes_test(token):
        raise AuthError(f"profile {profile.name!r}: the new token failed its test at "
                        f"{config.test_url}", retryable=False)
    return store.save(token)


def _serve(host: str, port: int, callback: _Callback) -> _CallbackServer:
    kind = _CallbackServer6 if host == "::1" else _CallbackServer
    bind = "127.0.0.1" if host == "localhost" else host
    try:
        server = kind((bind, port), _CallbackHandler)
    except OSError as exc:
        raise AuthError(f"cannot listen on {host}:{port} for the browser's answer: {exc}",
                        retryable=False) from None
    server.callback = callback
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                     name="reqworker-auth-callback").start()
    return server


@click.command("auth")
@click.argument("name")
@click.option("--no-browser", is_flag=True, help="Only print the address to open.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=300.0, show_default=True,
              help="Seconds to wait for the browser to come back.")
@click.pass_context
def auth_command(ctx: click.Context, name: str, no_browser: bool, timeout_s: float) -> None:
    """Authorise profile NAME in your browser and store its token for every worker.

    The token goes to Redis (REQWORKER_CACHE_URL, else REQWORKER_REDIS_URL), where the
    workers of every host share it and renew it with its refresh token.
    """
    opener: Opener | None = None if no_browser else webbrowser.open
    if isinstance(ctx.obj, dict) and "open_browser" in ctx.obj:
        opener = ctx.obj["open_browser"]
    try:
        settings = Settings.from_env()
        profiles = load_profiles(settings.apis_path)
        if name not in profiles:
            raise ProfileError(f"no profile {name!r} in {settings.apis_path}; "
                               f"known: {', '.join(sorted(profiles))}")
        # Before the browser: a Redis that cannot take the token is said now, not after it.
        check_redis(settings, roles=["cache"])
        client = command_client(settings.cache_url, settings)
        store = TokenStore(client, Keys(settings.key_prefix), name)
        token = authorise_in_browser(profiles[name], store, opener=opener, timeout_s=timeout_s,
                                     say=lambda text: click.echo(text, err=True))
    except (ProfileError, SettingsError) as exc:
        click.echo(f"reqworker: {exc}", err=True)
        sys.exit(2)
    except (AuthError, ServiceError) as exc:
        click.echo(f"reqworker: {exc}", err=True)
        sys.exit(1)
    except redis.RedisError as exc:
        click.echo(f"reqworker: cannot store the token: "
                   f"{redis_failure(settings.cache_url, exc)}", err=True)
        sys.exit(1)
    click.echo(f"profile {name}: token {token.describe(time.time())} stored for every worker")
