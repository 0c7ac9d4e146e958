"""Careless secrets: stray whitespace refused at load, secrets scrubbed from errors, token files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from producer.localredis import LocalRedis
from producer.loopback_api import LoopbackAPI
from tests.conftest import base_env
from tests.support import WorkerProcess
from worker.executor import scrub_record, secrets_of
from worker.oauth import TokenEndpointError, _token
from worker.profiles import ProfileError, parse_profiles

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
    assert "apis.ex.auth" in message and "${SECRET}" in message
    assert value.strip() not in message and "tok" not in message.replace("token", "")


def test_a_clean_secret_loads() -> None:
    profile = load({"kind": "bearer", "token": "${SECRET}"}, {"SECRET": TOKEN})
    assert profile.auth.secret_values == (TOKEN,)


@pytest.mark.parametrize("body", [
    {"access_token": TOKEN + "\n", "expires_in": 3600},
    {"access_token": TOKEN, "refresh_token": "r e f", "expires_in": 3600},
    {"access_token": TOKEN, "expires_in": "nan"},
    {"access_token": TOKEN, "expires_in": -1},
    {"access_token": TOKEN, "expires_in": 1e400},
    {"access_token": TOKEN, "expires_in": "soon"},
])
def test_a_token_from_the_endpoint_is_checked_like_a_configured_one(body: dict[str, Any]) -> None:
    with pytest.raises(TokenEndpointError) as refused:
        _token(body, 1000.0, "token endpoint")
    assert TOKEN not in str(refused.value)


def test_a_good_token_from_the_endpoint_expires_when_it_says() -> None:
    token = _token({"access_token": TOKEN, "expires_in": "60"}, 1000.0, "token endpoint")
    assert token.expires_at == 1060.0 and math.isfinite(token.expires_at)


def test_every_secret_of_the_profile_is_scrubbed_from_an_error_message() -> None:
    profile = load({"kind": "bearer", "token": "${SECRET}", "headers": {"X-Key": "${KEY}"}},
                   {"SECRET": TOKEN, "KEY": "key-5566778899"})
    sent = {"Authorization": f"Bearer {TOKEN}", "X-Key": "key-5566778899"}
    record = {"ok": False, "error": {"type": "InvalidHeader", "status_code": None,
                                      "message": f"bad header 'Bearer {TOKEN}' and key-5566778899"}}
    scrubbed = scrub_record(record, secrets_of(profile, sent))
    assert TOKEN not in str(scrubbed) and "key-5566778899" not in str(scrubbed)
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
    assert "apis.careless.auth.token" in log and "${CARELESS_TOKEN}" in log
    assert TOKEN not in log
