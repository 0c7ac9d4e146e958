"""The ``[apis.NAME.auth]`` table: which credentials a profile uses and where they come from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from worker.secret import Secret, flaw
from worker.tables import TableReader
from worker.urls import HEADER_NAME, has_user_info, is_http_url, is_loopback, is_under_base

AUTH_KINDS = ("none", "bearer", "oauth2")
CLIENT_AUTH = ("basic", "post")
_LOCALHOST = ("localhost", "127.0.0.1", "::1")
_COMMON = {"kind", "header_key", "header_prefix", "headers"}
_BEARER = _COMMON | {"token"}
_OAUTH2 = _COMMON | {
    "token_url", "client_id", "client_secret", "client_auth", "scope", "test_expiry",
    "auth_url", "redirect_uri", "redirect_port", "test_url", "test_status", "token_file",
}


@dataclass(frozen=True)
class AuthConfig:
    """How requests of a profile are authorised.

    Values that may come from ``${VAR}`` are None in the producer's view
    (``with_secrets=False``): it checks the table but needs no secret.
    """

    kind: str = "none"
    token: Secret | None = None
    header_key: str = "Authorization"
    header_prefix: str = "Bearer "
    #: Static headers sent beside the token, as (name, value) pairs.
    headers: tuple[tuple[str, Secret | None], ...] = ()
    token_url: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    #: How the client authenticates at token_url: HTTP Basic, or fields in the form body.
    client_auth: str = "basic"
    scope: str | None = None
    #: Renew a token when fewer seconds than this remain before it expires.
    test_expiry_s: float = 60.0
    #: The authorisation-code grant (``reqworker auth NAME``): the user's consent page.
    auth_url: str | None = None
    redirect_uri: str | None = None
    #: An absolute URL under base_url that answers ``test_status`` to a good token.
    test_url: str | None = None
    test_status: tuple[int, ...] = (200,)
    #: A JSON token file that seeds the shared store when Redis holds no token.
    token_file: str | None = None

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Every credential of the table as text, to scrub from error messages and logs."""
        held = [self.token, self.client_secret, *(value for _, value in self.headers)]
        return tuple(s.reveal() for s in held if s is not None and s.reveal())

    @property
    def header_names(self) -> tuple[str, ...]:
        """Names of every header this table puts on a request."""
        return (self.header_key, *(name for name, _ in self.headers))


def read_auth(reader: TableReader, table: Any, where: str, base_url: str) -> AuthConfig:
    """Check an auth table and build its config; raises ``ProfileError`` naming the key."""
    if not isinstance(table, Mapping):
        raise reader.fail(where, "must be a table")
    kind = table.get("kind", "none")
    if kind not in AUTH_KINDS:
        raise reader.fail(f"{where}.kind", f"{kind!r} is not one of {', '.join(AUTH_KINDS)}")
    allowed = {"none": {"kind"}, "bearer": _BEARER, "oauth2": _OAUTH2}[kind]
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise reader.fail(where, f"unknown setting {unknown[0]!r} for kind = {kind!r}; "
                                 f"known: {', '.join(sorted(allowed))}")
    if kind == "none":
        return AuthConfig()
    common: dict[str, Any] = {
        "kind": kind,
        "header_key": reader.expand(table.get("header_key", "Authorization"), f"{where}.header_key"),
        "header_prefix": reader.expand(table.get("header_prefix", "Bearer "), f"{where}.header_prefix"),
        "headers": _headers(reader, table.get("headers", {}), f"{where}.headers"),
    }
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in common["header_prefix"]):
        raise reader.fail(f"{where}.header_prefix", "must not contain control characters")
    if not HEADER_NAME.match(common["header_key"]):
        raise reader.fail(f"{where}.header_key", f"{common['header_key']!r} is not a header name")
    if any(name.lower() == common["header_key"].lower() for name, _ in common["headers"]):
        raise reader.fail(f"{where}.headers", f"must not set {common['header_key']}: the token goes there")
    if kind == "bearer":
        if "token" not in table:
            raise reader.fail(where, "kind = \"bearer\" needs token = \"${YOUR_TOKEN_VARIABLE}\"")
        return AuthConfig(token=_secret(reader, table, "token", where, required=True), **common)
    return AuthConfig(**common, **_oauth2(reader, table, where, base_url))


def _oauth2(reader: TableReader, table: Mapping[str, Any], where: str, base_url: str) -> dict[str, Any]:
    for key in ("token_url", "client_id"):
        if key not in table:
            raise reader.fail(where, f"kind = \"oauth2\" needs {key}")
    auth_url = _url(reader, table, "auth_url", where)
    if "client_secret" not in table and auth_url is None:
        raise reader.fail(where, "kind = \"oauth2\" needs client_secret = \"${YOUR_SECRET_VARIABLE}\" "
                                 "(only the authorisation-code grant, with auth_url, may go without)")
    client_auth = table.get("client_auth", "basic")
    if client_auth not in CLIENT_AUTH:
        raise reader.fail(f"{where}.client_auth", f"{client_auth!r} is not one of basic, post")
    test_expiry_s = reader.number(table, "test_expiry", where, 60.0)
    if test_expiry_s < 0:
        raise reader.fail(f"{where}.test_expiry", "must be 0 seconds or more")
    if "test_status" in table and "test_url" not in table:
        raise reader.fail(f"{where}.test_status", "only means something with test_url")
    return {
        "token_url": _url(reader, table, "token_url", where),
        "client_id": _client_id(reader, table, where),
        "client_secret": _secret(reader, table, "client_secret", where, required=False),
        "client_auth": client_auth,
        "scope": _text(reader, table, "scope", where),
        "test_expiry_s": test_expiry_s,
        "auth_url": auth_url,
        "redirect_uri": _redirect(reader, table, where, "auth_url" in table),
        "test_url": _test_url(reader, table, where, base_url),
        "test_status": _statuses(reader, table.get("test_status", 200), f"{where}.test_status"),
        "token_file": _text(reader, table, "token_file", where),
    }


def _text(reader: TableReader, table: Mapping[str, Any], key: str, where: str) -> str | None:
    """The value with ``${VAR}`` expanded; without secrets, only a value that needs none."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str):
        raise reader.fail(f"{where}.{key}", f"must be a string, not {type(value).__name__}")
    if not reader.with_secrets and "${" in value:
        return None
    text = reader.expand(value, f"{where}.{key}")
    if not text:
        raise reader.fail(f"{where}.{key}", "is empty")
    return text


def _client_id(reader: TableReader, table: Mapping[str, Any], where: str) -> str | None:
    client_id = _text(reader, table, "client_id", where)
    problem = flaw(client_id) if client_id is not None else None
    if problem:
        raise reader.fail(f"{where}.client_id", f"{problem}; fix the value (it is not shown)")
    return client_id


def _secret(reader: TableReader, table: Mapping[str, Any], key: str, where: str, *,
            required: bool) -> Secret | None:
    if key not in table:
        return None
    if not isinstance(table[key], str):
        raise reader.fail(f"{where}.{key}", f"must be a string, not {type(table[key]).__name__}")
    if not reader.with_secrets:
        return None
    value = Secret(_checked(reader, table[key], f"{where}.{key}"))
    if required and not value:
        raise reader.fail(f"{where}.{key}", "is empty")
    return value


def _checked(reader: TableReader, raw: str, where: str) -> str:
    """A credential with ``${VAR}`` expanded, refused (never shown) when it has whitespace."""
    value = reader.expand(raw, where)
    problem = flaw(value)
    if problem:
        names = ", ".join(f"${{{name}}}" for name in reader.variables(raw)) or "the value in the file"
        raise reader.fail(where, f"{names} {problem}; fix the secret (its value is not shown)")
    return value


def _url(reader: TableReader, table: Mapping[str, Any], key: str, where: str) -> str | None:
    url = _text(reader, table, key, where)
    if url is not None:
        if not is_http_url(url):
            raise reader.fail(f"{where}.{key}", f"{url!r} is not an http(s) URL with a host")
        if has_user_info(url):
            raise reader.fail(f"{where}.{key}", "must not carry a user name or password")
        parts = urlsplit(url)
        if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
            raise reader.fail(f"{where}.{key}", f"{url!r} must be https: client secrets and "
                              "tokens travel through it (plain http only on loopback)")
    return url


def _redirect(reader: TableReader, table: Mapping[str, Any], where: str, code_grant: bool) -> str | None:
    if "redirect_uri" in table and "redirect_port" in table:
        raise reader.fail(where, "give redirect_uri or redirect_port, not both")
    given = "redirect_uri" if "redirect_uri" in table else "redirect_port"
    if given in table and not code_grant:
        raise reader.fail(f"{where}.{given}", "only means something with auth_url")
    if code_grant and given not in table:
        raise reader.fail(where, "auth_url needs redirect_uri = \"http://localhost:PORT/PATH\" or "
                                 "redirect_port = PORT (as registered with the provider)")
    if "redirect_port" in table:
        port = reader.whole(table, "redirect_port", where, None, minimum=1)
        if port is None or port > 65535:
            raise reader.fail(f"{where}.redirect_port", "must be a port, 1 to 65535")
        return f"http://localhost:{port}/callback"
    uri = _text(reader, table, "redirect_uri", where)
    if uri is not None:
        parts = urlsplit(uri)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "http" or parts.hostname not in _LOCALHOST or not port:
            raise reader.fail(f"{where}.redirect_uri",
                              f"{uri!r} must be http://localhost:PORT/... (the browser comes back "
                              "to this machine)")
    return uri


def _test_url(reader: TableReader, table: Mapping[str, Any], where: str, base_url: str) -> str | None:
    value = _text(reader, table, "test_url", where)
    if value is None:
        return None
    url = value if "://" in value else f"{base_url}/{value.lstrip('/')}"
    if not is_under_base(url, base_url):
        raise reader.fail(f"{where}.test_url", f"{value!r} is not under base_url {base_url!r}")
    return url


def _statuses(reader: TableReader, value: Any, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 100 <= v <= 599
                         for v in values):
        raise reader.fail(where, f"must be an HTTP status or a list of them, not {value!r}")
    return tuple(values)


def _headers(reader: TableReader, table: Any, where: str) -> tuple[tuple[str, Secret | None], ...]:
    if not isinstance(table, Mapping):
        raise reader.fail(where, "must be a table like { \"X-Client-Id\" = \"${CLIENT_ID}\" }")
    out: list[tuple[str, Secret | None]] = []
    for name, value in table.items():
        if not HEADER_NAME.match(name):
            raise reader.fail(where, f"{name!r} is not a header name")
        if not isinstance(value, str):
            raise reader.fail(f"{where}.{name}", f"must be a string, not {type(value).__name__}")
        text = _checked(reader, value, f"{where}.{name}") if reader.with_secrets else None
        out.append((name, Secret(text) if text is not None else None))
    return tuple(out)

