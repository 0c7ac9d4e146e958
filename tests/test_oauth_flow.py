"""``reqworker auth NAME``: the authorisation-code flow end to end, a test playing the browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
from click.testing import CliRunner

from producer.authflow import auth_command, authorise_in_browser
from producer.demo.localredis import LocalRedis, free_port
from tests.support.oauth import ENV, Provider, authoriser, oauth_profile
from worker.errors import AuthError
from worker.keys import Keys
from worker.profiles import Profile
from worker.tokens import TokenStore


def browser_flow(provider: Provider, **extra: Any) -> Profile:
    return oauth_profile(provider, auth_url=f"{provider.url}/authorize",
                         redirect_uri=f"http://localhost:{free_port()}/callback", **extra)


def browser(url: str) -> None:
    """The user: consents at the provider, which redirects back to the local callback."""
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, answer.text


def test_the_browser_flow_stores_a_token_every_worker_uses(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    profile = browser_flow(provider, test_url="/me")
    opened: list[str] = []

    def user(url: str) -> None:
        opened.append(url)
        browser(url)

    token = authorise_in_browser(profile, TokenStore(client, keys, "svc"), opener=user,
                                 say=lambda text: None)

    query = parse_qs(urlsplit(opened[0]).query)
    assert query["client_id"] == [ENV["CID"]]
    assert query["response_type"] == ["code"]
    assert query["scope"] == ["read"]
    assert query["redirect_uri"] == [profile.auth.redirect_uri]
    assert provider.forms[0]["grant_type"] == "authorization_code"
    assert json.loads(client.get(keys.token("svc")) or b"")["access_token"] == provider.issued[0]
    worker = authoriser(profile, client, keys)
    assert worker.credentials().headers["Authorization"] == f"Bearer {provider.issued[0]}"
    assert worker.credentials().version == str(token.version)
    assert provider.token_calls() == 1


def test_an_answer_with_the_wrong_state_is_ignored(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    profile = browser_flow(provider)

    def user(url: str) -> None:
        callback = profile.auth.redirect_uri
        forged = requests.get(f"{callback}?code=stolen&state=not-ours", timeout=30)
        assert forged.status_code == 400
        browser(url)

    authorise_in_browser(profile, TokenStore(client, keys, "svc"), opener=user, say=lambda t: None)
    assert provider.token_calls() == 1


def test_a_refusal_at_the_provider_stores_nothing(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    profile = browser_flow(provider)

    def user(url: str) -> None:
        state = parse_qs(urlsplit(url).query)["state"][0]
        requests.get(f"{profile.auth.redirect_uri}?error=access_denied&state={state}", timeout=30)

    with pytest.raises(AuthError, match="access_denied"):
        authorise_in_browser(profile, TokenStore(client, keys, "svc"), opener=user,
                             say=lambda t: None)
    assert client.get(keys.token("svc")) is None
    assert provider.token_calls() == 0


def test_workers_need_the_browser_flow_before_they_have_a_token(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    with pytest.raises(AuthError, match="reqworker auth svc") as caught:
        authoriser(browser_flow(provider), client, keys).credentials()
    assert not caught.value.retryable


def test_auth_command_end_to_end(
        provider: Provider, redis_server: LocalRedis, client: redis.Redis[bytes], keys: Keys,
        tmp_path: Path) -> None:
    port = free_port()
    apis = tmp_path / "apis.toml"
    apis.write_text(f"""
[apis.svc]
base_url = "{provider.url}/api"

[apis.svc.auth]
kind = "oauth2"
token_url = "{provider.url}/token"
auth_url = "{provider.url}/authorize"
redirect_port = {port}
client_id = "${{CID}}"
client_secret = "${{CSECRET}}"
""")
    env = {"REQWORKER_APIS": str(apis), "REQWORKER_REDIS_URL": redis_server.url,
           "REQWORKER_CACHE_URL": redis_server.url, "REQWORKER_KEY_PREFIX": keys.prefix, **ENV}
    result = CliRunner().invoke(auth_command, ["svc"], env=env, obj={"open_browser": browser})

    assert result.exit_code == 0, result.output
    assert f"redirect_uri=http%3A%2F%2Flocalhost%3A{port}%2Fcallback" in result.output  # printed
    assert provider.issued[0] not in result.output
    assert json.loads(client.get(keys.token("svc")) or b"")["access_token"] == provider.issued[0]


def test_auth_command_refuses_a_profile_without_a_browser_flow(
        provider: Provider, redis_server: LocalRedis, tmp_path: Path) -> None:
    apis = tmp_path / "apis.toml"
    apis.write_text(f'[apis.svc]\nbase_url = "{provider.url}"\n')
    env = {"REQWORKER_APIS": str(apis), "REQWORKER_REDIS_URL": redis_server.url}
    result = CliRunner().invoke(auth_command, ["svc"], env=env, obj={"open_browser": browser})
    assert result.exit_code == 1
    assert "no browser flow" in result.output
