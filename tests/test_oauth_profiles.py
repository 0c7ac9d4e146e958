"""The ``[apis.NAME.auth]`` table: oauth2 settings, and bearer/none as before (pure, no services)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.auth import Credentials, NoAuth, StaticBearer
from worker.profiles import Profile, ProfileError, parse_profiles
from worker.runtime import make_authoriser
from worker.secret import Secret

BASE = "https://api.example.com/v1"
ENV = {"CID": "client-abc", "CSECRET": "s3cret", "TOKEN": "static-token"}


def profile(auth: dict[str, Any], env: dict[str, str] | None = None, **kw: Any) -> Profile:
    raw = {"apis": {"ex": {"base_url": BASE, "auth": auth}}}
    return parse_profiles(raw, ENV if env is None else env, **kw)["ex"]


def oauth(**extra: Any) -> dict[str, Any]:
    return {"kind": "oauth2", "token_url": "https://accounts.example.com/api/token",
            "client_id": "${CID}", "client_secret": "${CSECRET}", **extra}


def test_oauth2_profile_reads_every_setting() -> None:
    auth = profile(oauth(scope="read write", test_expiry=300, auth_url="https://accounts.example.com/a",
                         redirect_port=8123, test_url="/me", test_status=[200, 204],
                         headers={"X-Client-Id": "${CID}"}, token_file="~/tok.json",
                         client_auth="post")).auth
    assert auth.kind == "oauth2"
    assert auth.client_id == "client-abc"
    assert auth.client_secret == Secret("s3cret")
    assert auth.scope == "read write"
    assert auth.test_expiry_s == 300
    assert auth.redirect_uri == "http://localhost:8123/callback"
    assert auth.test_url == f"{BASE}/me"
    assert auth.test_status == (200, 204)
    assert auth.headers == (("X-Client-Id", Secret("client-abc")),)
    assert auth.token_file == "~/tok.json"
    assert auth.client_auth == "post"
    assert (auth.header_key, auth.header_prefix) == ("Authorization", "Bearer ")


def test_oauth2_defaults() -> None:
    auth = profile(oauth()).auth
    assert auth.test_expiry_s == 60
    assert auth.scope is None
    assert auth.auth_url is None
    assert auth.client_auth == "basic"
    assert auth.test_status == (200,)


def test_unknown_oauth2_setting_is_named() -> None:
    with pytest.raises(ProfileError, match="'client_secrt'"):
        profile(oauth(client_secrt="x"))


def test_missing_variable_is_named() -> None:
    with pytest.raises(ProfileError, match="environment variable CSECRET is not set"):
        profile(oauth(), env={"CID": "client-abc"})


def test_producer_view_needs_no_secret_and_keeps_header_names() -> None:
    view = profile(oauth(headers={"X-Client-Id": "${NOT_SET}"}), env={}, with_secrets=False)
    assert view.auth.client_secret is None
    assert view.auth.client_id is None
    assert "X-Client-Id" in view.credential_headers


@pytest.mark.parametrize(("extra", "message"), [
    ({"token_url": "ftp://x/token"}, "token_url"),
    ({"auth_url": "https://a.example.com/authorize"}, "redirect_uri"),
    ({"redirect_port": 8080}, "only means something with auth_url"),
    ({"auth_url": "https://a/x", "redirect_uri": "http://example.com:8080/cb"}, "localhost"),
    ({"auth_url": "https://a/x", "redirect_uri": "http://localhost/cb", "redirect_port": 1}, "not both"),
    ({"test_url": "https://elsewhere.example.com/me"}, "not under base_url"),
    ({"test_status": 200}, "test_url"),
    ({"test_expiry": -1}, "test_expiry"),
    ({"client_auth": "jwt"}, "client_auth"),
    ({"headers": {"Authorization": "x"}}, "token goes there"),
])
def test_bad_oauth2_settings_are_refused_with_the_key(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        profile(oauth(**extra))


def test_client_secret_is_required_without_the_browser_flow() -> None:
    table = oauth()
    del table["client_secret"]
    with pytest.raises(ProfileError, match="client_secret"):
        profile(table)
    public = profile({**table, "auth_url": "https://a.example.com/x", "redirect_port": 9000}).auth
    assert public.client_secret is None


def test_bearer_and_none_are_unchanged() -> None:
    bearer = profile({"kind": "bearer", "token": "${TOKEN}"})
    assert isinstance(make_authoriser(bearer), StaticBearer)
    assert make_authoriser(bearer).credentials().headers == {"Authorization": "Bearer static-token"}
    assert isinstance(make_authoriser(profile({})), NoAuth)
    with pytest.raises(ProfileError, match="'scope'"):
        profile({"kind": "bearer", "token": "${TOKEN}", "scope": "x"})
    with pytest.raises(ProfileError, match="'token'"):
        profile({"kind": "none", "token": "x"})


def test_bearer_and_oauth2_credentials_carry_the_token_and_static_headers_alike() -> None:
    shape = {"header_key": "X-Api-Token", "header_prefix": "Token ", "headers": {"X-Client-Id": "${CID}"}}
    headers = {"X-Api-Token": "Token static-token", "X-Client-Id": "client-abc"}
    bearer = profile({"kind": "bearer", "token": "${TOKEN}", **shape}).auth
    oauth2 = profile(oauth(**shape)).auth
    assert StaticBearer(bearer).credentials() == Credentials(headers, "static")
    assert Credentials.for_token(oauth2, Secret("static-token"), "7") == Credentials(headers, "7")


def test_oauth2_authoriser_needs_redis() -> None:
    with pytest.raises(ValueError, match="Redis"):
        make_authoriser(profile(oauth()))
