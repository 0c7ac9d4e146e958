"""Careless secrets: stray whitespace refused at load, secrets scrubbed from errors, token files."""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from producer.authflow import _CallbackHandler, authorise_in_browser
from producer.client import Client
from producer.demo.localredis import LocalRedis, free_port
from tests.support import WorkerProcess, base_env
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.oauth import ENV, Provider, oauth_profile
from worker.executor import scrub_record, secrets_of
from worker.keys import Keys
from worker.oauth import TokenEndpoint, TokenEndpointError, parse_token, read_token_file
from worker.profiles import ProfileError, load_profiles, parse_profiles
from worker.settings import Settings
from worker.tokens import TokenStore

BASE = "https://api.example.com/v1"
TOKEN = "tok-9f8e7d6c5b4a39281706"


def load(auth: dict[str, Any], env: dict[str, str]) -> Any:
    return parse_profiles({"apis": {"ex": {"base_url": BASE, "auth": auth}}}, env)["ex"]


@pytest.mark.parametrize("value", [TOKEN + "\n", TOKEN + "\r\n", " " + TOKEN, "tok en", "tok\x00en",
                                   TOKEN + "\t"])
@pytest.mark.parametrize("auth", [
    {"kind": "bearer", "token": "${SECRET}"},
    {"kind": "bearer", "token": "plain", "headers": {"X-Api-Key": "${SECRET}"}},
    {"kind": "oauth2", "token_url": "https://id.example.com/token", "client_id": "cid",
     "client_secret": "${SECRET}"},
])
def test_a_secret_with_whitespace_is_refused_naming_profile_and_variable_never_the_value(
        value: str, auth: dict[str, Any]) -> None:
    with pytest.raises(ProfileError) as refused:
        load(auth, {"SECRET": value})
    message = str(refused.value)
    assert "apis.ex.auth" in message
    assert "${SECRET}" in message
    assert value.strip() not in message
    assert "tok" not in message.replace("token", "")


def test_a_clean_secret_loads() -> None:
    profile = load({"kind": "bearer", "token": "${SECRET}"}, {"SECRET": TOKEN})
    assert profile.auth.secret_values == (TOKEN,)


#: Token endpoint answers (and token files) that must not become a token.
UNUSABLE_TOKENS = [
    {"access_token": TOKEN + "\n", "expires_in": 3600},
    {"access_token": TOKEN, "refresh_token": "r e f", "expires_in": 3600},
    {"access_token": TOKEN, "expires_in": "nan"},
    {"access_token": TOKEN, "expires_in": -1},
    {"access_token": TOKEN, "expires_in": 1e400},
    {"access_token": TOKEN, "expires_in": "soon"},
]


@pytest.mark.parametrize("body", UNUSABLE_TOKENS)
def test_a_token_from_the_endpoint_is_checked_like_a_configured_one(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"^with (an unusable \w+_token:|expires_in) ") as refused:
        parse_token(body, 1000.0)
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize("body", [*UNUSABLE_TOKENS, {"access_token": TOKEN, "expires_at": "soon"},
                                  ["not", "an", "object"]])
def test_a_token_file_is_checked_like_a_token_from_the_endpoint(
        body: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token.json"
    path.write_text(json.dumps(body))
    assert read_token_file(path) is None
    assert "cannot be used" in caplog.text
    assert TOKEN not in caplog.text


def test_a_good_token_from_the_endpoint_expires_when_it_says() -> None:
    token = parse_token({"access_token": TOKEN, "expires_in": "60"}, 1000.0)
    assert token.expires_at == 1060.0
    assert math.isfinite(token.expires_at)


def test_a_token_file_expires_when_it_says(tmp_path: Path) -> None:
    path = tmp_path / "token.json"

    def saved(fields: dict[str, Any]) -> Any:
        path.write_text(json.dumps({"access_token": TOKEN, **fields}))
        os.utime(path, (1000.0, 1000.0))
        return read_token_file(path)

    token = saved({"expires_in": "60", "refresh_token": "refresh-1", "scope": "read"})
    assert (token.expires_at, token.obtained_at, token.scope) == (1060.0, 1000.0, "read")
    assert token.refresh_token.reveal() == "refresh-1"
    assert saved({"expires_at": "1970-01-01T00:20:00+00:00", "expires_in": 60}).expires_at == 1200.0
    assert saved({"expires_at": 5000}).expires_at == 5000.0
    assert saved({"expires_at": None}).expires_at is None


def test_every_secret_of_the_profile_is_scrubbed_from_an_error_message() -> None:
    profile = load({"kind": "bearer", "token": "${SECRET}", "headers": {"X-Key": "${KEY}"}},
                   {"SECRET": TOKEN, "KEY": "key-5566778899"})
    sent = {"Authorization": f"Bearer {TOKEN}", "X-Key": "key-5566778899"}
    record = {"ok": False, "error": {"type": "InvalidHeader", "status_code": None,
                                      "message": f"bad header 'Bearer {TOKEN}' and key-5566778899"}}
    scrubbed = scrub_record(record, secrets_of(profile, sent))
    assert TOKEN not in str(scrubbed)
    assert "key-5566778899" not in str(scrubbed)
    assert "[REDACTED]" in scrubbed["error"]["message"]


@pytest.mark.integration
def test_a_worker_refuses_to_start_with_a_token_that_ends_in_a_newline(
        redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path) -> None:
    apis = tmp_path / "apis.toml"
    apis.write_text(f'[apis.careless]\nbase_url = "{loopback_api.url}"\n'
                    '[apis.careless.auth]\nkind = "bearer"\ntoken = "${CARELESS_TOKEN}"\n')
    env = base_env(redis_server.url, str(apis), CARELESS_TOKEN=TOKEN + "\n")
    worker = WorkerProcess(env, tmp_path / "worker.log", concurrency=1)
    worker.proc.wait(timeout=120)
    worker.stop()
    log = worker.log()
    assert worker.proc.returncode != 0
    assert "apis.careless.auth.token" in log
    assert "${CARELESS_TOKEN}" in log
    assert TOKEN not in log


@pytest.mark.parametrize("key", ["token_url", "auth_url"])
def test_oauth_endpoints_must_be_https_unless_on_loopback(key: str) -> None:
    auth = {"kind": "oauth2", "token_url": "https://id.example.com/token", "client_id": "cid",
            "client_secret": "${SECRET}", "redirect_port": 8123, "auth_url": "https://id.example.com/a"}
    with pytest.raises(ProfileError, match=f"{key}.*must be https"):
        load({**auth, key: "http://id.example.com/x"}, {"SECRET": "s3cret"})
    for host in ("127.0.0.1:9000", "localhost:9000", "[::1]:9000"):
        load({**auth, key: f"http://{host}/x"}, {"SECRET": "s3cret"})


def test_the_browser_callback_drops_a_silent_connection_so_the_answer_gets_through(
        provider: Provider, client: redis.Redis[bytes], keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_CallbackHandler, "timeout", 0.5)
    port = free_port()
    profile = oauth_profile(provider, auth_url=f"{provider.url}/authorize",
                            redirect_uri=f"http://localhost:{port}/callback")
    silent: list[socket.socket] = []

    def user(url: str) -> None:
        # Someone connects to the callback port first and never sends a byte.
        silent.append(socket.create_connection(("127.0.0.1", port)))
        answer = requests.get(url, timeout=30)
        assert answer.status_code == 200, answer.text

    token = authorise_in_browser(profile, TokenStore(client, keys, "svc"), opener=user,
                                 say=lambda text: None, timeout_s=60)
    assert token.access_token.reveal() == provider.issued[0]
    silent[0].close()


@pytest.mark.integration
def test_a_worker_refuses_a_token_file_that_others_may_read(
        redis_server: LocalRedis, provider: Provider, tmp_path: Path) -> None:
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"access_token": "file-token-0a9b8c7d", "expires_in": 3600}))
    token_file.chmod(0o644)
    apis = tmp_path / "apis.toml"
    apis.write_text(f'[apis.svc]\nbase_url = "{provider.url}/api"\ntimeout = 5\n'
                    f'[apis.svc.auth]\nkind = "oauth2"\ntoken_url = "{provider.url}/token"\n'
                    'client_id = "${CID}"\nclient_secret = "${CSECRET}"\n'
                    f'token_file = "{token_file}"\n')
    env = base_env(redis_server.url, str(apis), REQWORKER_KEY_PREFIX=f"tf{uuid.uuid4().hex[:6]}",
                   **ENV)
    worker = WorkerProcess(env, tmp_path / "worker.log", concurrency=1).wait_ready()
    try:
        client = Client(Settings.from_env(env), load_profiles(apis, env, with_secrets=False))
        batch, _ = client.submit({"api": "svc", "path": "/me"})
        batch.wait(poll_s=0.05, timeout_s=60)
        record = next(batch.results())
    finally:
        worker.stop()
    assert record["ok"] is False
    assert record["error"]["type"] == "AuthError"
    assert "chmod 600" in record["error"]["message"]
    assert not any("file-token-0a9b8c7d" in str(h.headers) for h in provider.api.hits())


def test_a_token_endpoint_that_echoes_the_secret_has_it_scrubbed(provider: Provider) -> None:
    provider.api.script("/token", Reply(400, json={"error": "invalid_client",
                                                   "error_description": f"bad secret {ENV['CSECRET']}"}))
    endpoint = TokenEndpoint("svc", oauth_profile(provider).auth)
    with pytest.raises(TokenEndpointError) as refused:
        endpoint.client_credentials()
    assert ENV["CSECRET"] not in str(refused.value)
    assert "bad secret [REDACTED]" in str(refused.value)
