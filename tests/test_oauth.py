"""The oauth2 authoriser on a real redis-server, with a fake provider on loopback."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.demo.localredis import free_port
from tests.support.loopback import Reply
from tests.support.oauth import ENV, Provider, authoriser, every_value, oauth_profile
from worker.auth import Credentials
from worker.errors import AuthError
from worker.keys import Keys
from worker.runtime import make_authoriser
from worker.secret import Secret, redact
from worker.tokens import Token, TokenStore


def store_token(client: redis.Redis[bytes], keys: Keys, *, expires_in_s: float, refresh: str | None = None,
                access: str = "old-access-token") -> Token:
    now = time.time()
    token = Token(Secret(access), Secret(refresh) if refresh else None, now + expires_in_s,
                  obtained_at=now - 3600)
    return TokenStore(client, keys, "svc").save(token)


def stored(client: redis.Redis[bytes], keys: Keys) -> dict[str, Any]:
    raw = client.get(keys.token("svc"))
    assert raw is not None
    value: dict[str, Any] = json.loads(raw)
    return value


def test_client_credentials_token_is_stored_and_reused_by_another_process(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    profile = oauth_profile(provider)
    first = make_authoriser(profile, client, keys)

    creds = first.credentials()

    assert provider.token_calls() == 1
    assert provider.forms[0] == {"grant_type": "client_credentials", "scope": "read"}
    assert provider.api.hits("/token")[0].headers["Authorization"].startswith("Basic ")
    token = provider.issued[0]
    assert creds.headers == {"Authorization": f"Bearer {token}"}
    assert stored(client, keys)["access_token"] == token
    assert client.pttl(keys.token("svc")) > 0
    assert make_authoriser(profile, client, keys).credentials() == creds
    assert provider.token_calls() == 1


def test_expired_token_is_renewed_once_for_many_threads_in_two_processes(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    provider.delay_s = 0.2  # widens the race the lock must win; nothing is timed
    profile = oauth_profile(provider)
    old = store_token(client, keys, expires_in_s=-10)
    processes = [authoriser(profile, client, keys), authoriser(profile, client, keys)]
    start = threading.Barrier(16)
    got: list[Credentials | BaseException] = []

    def ask(n: int) -> None:
        start.wait()
        try:
            got.append(processes[n % 2].credentials())
        except BaseException as exc:
            got.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert provider.token_calls() == 1
    assert len(got) == 16
    creds = [c for c in got if isinstance(c, Credentials)]
    assert creds == got  # no process failed
    assert {c.headers["Authorization"] for c in creds} == {f"Bearer {provider.issued[0]}"}
    assert {int(str(c.version)) for c in creds} == {stored(client, keys)["version"]}
    assert stored(client, keys)["version"] > old.version


def test_token_expiring_within_test_expiry_is_renewed_before_use(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    store_token(client, keys, expires_in_s=30)
    creds = authoriser(oauth_profile(provider, test_expiry=60), client, keys).credentials()
    assert creds.headers["Authorization"] == f"Bearer {provider.issued[0]}"


def test_token_outside_test_expiry_is_used_as_it_is(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    store_token(client, keys, expires_in_s=600)
    creds = authoriser(oauth_profile(provider, test_expiry=60), client, keys).credentials()
    assert creds.headers["Authorization"] == "Bearer old-access-token"
    assert provider.token_calls() == 0


def test_a_dead_lock_holder_blocks_others_only_until_its_lease_ends(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    lock_at_call: list[bytes | None] = []
    provider.on_token = lambda hit: lock_at_call.append(client.get(keys.token_lock("svc")))
    client.set(keys.token_lock("svc"), "holder-that-died", px=300)

    creds = authoriser(oauth_profile(provider), client, keys).credentials()

    assert creds.headers["Authorization"] == f"Bearer {provider.issued[0]}"
    assert provider.token_calls() == 1
    assert lock_at_call[0] not in (None, b"holder-that-died")  # the endpoint was called under our lease
    assert client.get(keys.token_lock("svc")) is None  # and the lease was given back


def test_renew_of_an_older_version_uses_the_newer_token_without_the_endpoint(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    older = store_token(client, keys, expires_in_s=600, access="token-one")
    newer = store_token(client, keys, expires_in_s=600, access="token-two")
    process = authoriser(oauth_profile(provider), client, keys)

    assert process.renew(Credentials({"Authorization": "Bearer token-one"}, str(older.version)))
    assert process.credentials() == Credentials({"Authorization": "Bearer token-two"},
                                                str(newer.version))
    assert provider.token_calls() == 0


def test_renew_of_the_current_version_gets_a_new_token(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    current = store_token(client, keys, expires_in_s=600)
    process = authoriser(oauth_profile(provider), client, keys)

    assert process.renew(process.credentials())
    creds = process.credentials()
    assert int(str(creds.version)) > current.version
    assert creds.headers["Authorization"] == f"Bearer {provider.issued[0]}"
    assert provider.token_calls() == 1


def test_refresh_grant_keeps_the_old_refresh_token_when_none_is_returned(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    store_token(client, keys, expires_in_s=-1, refresh="refresh-original")
    creds = authoriser(oauth_profile(provider), client, keys).credentials()

    assert provider.forms == [{"grant_type": "refresh_token", "refresh_token": "refresh-original"}]
    assert creds.headers["Authorization"] == f"Bearer {provider.issued[0]}"
    assert stored(client, keys)["refresh_token"] == "refresh-original"


def test_refresh_grant_stores_a_rotated_refresh_token(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    provider.rotate_refresh = True
    store_token(client, keys, expires_in_s=-1, refresh="refresh-original")
    authoriser(oauth_profile(provider), client, keys).credentials()
    assert stored(client, keys)["refresh_token"].startswith("refresh-1-")


def test_refused_refresh_token_falls_back_to_client_credentials(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    provider.api.script("/token", Reply(400, json={"error": "invalid_grant"}), Reply(
        json={"access_token": "fresh-token-value", "expires_in": 60}))
    store_token(client, keys, expires_in_s=-1, refresh="refresh-revoked")
    creds = authoriser(oauth_profile(provider), client, keys).credentials()
    assert creds.headers["Authorization"] == "Bearer fresh-token-value"
    assert [h.body.decode().split("&")[0] for h in provider.api.hits("/token")] == [
        "grant_type=refresh_token", "grant_type=client_credentials"]


@pytest.mark.parametrize("status", [500, 503, 408, 425, 429])  # as an API answer (worker.verdicts)
def test_a_failing_token_endpoint_is_a_retryable_auth_error(
        provider: Provider, client: redis.Redis[bytes], keys: Keys, status: int) -> None:
    provider.api.script("/token", Reply(status, json={"error": "busy"}))
    with pytest.raises(AuthError) as caught:
        authoriser(oauth_profile(provider), client, keys).credentials()
    assert caught.value.retryable
    assert "'svc'" in str(caught.value)
    assert str(status) in str(caught.value)


def test_an_unreachable_token_endpoint_is_a_retryable_auth_error(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    profile = oauth_profile(provider, token_url=f"http://127.0.0.1:{free_port()}/token")
    with pytest.raises(AuthError) as caught:
        authoriser(profile, client, keys).credentials()
    assert caught.value.retryable


def test_refused_client_credentials_fail_at_once_and_are_remembered(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    provider.api.script("/token", Reply(401, json={"error": "invalid_client",
                                                   "error_description": "Bad client credentials"}))
    profile = oauth_profile(provider)
    with pytest.raises(AuthError) as first:
        authoriser(profile, client, keys).credentials()
    with pytest.raises(AuthError) as second:
        authoriser(profile, client, keys).credentials()  # another process, within the memo

    assert not first.value.retryable
    assert not second.value.retryable
    assert "'svc'" in str(first.value)
    assert "Bad client credentials" in str(first.value)
    assert "Bad client credentials" in str(second.value)
    assert provider.token_calls() == 1


def test_renew_after_a_refusal_invalidates_the_refused_version(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    refused = store_token(client, keys, expires_in_s=600)
    provider.api.script("/token", Reply(401, json={"error": "invalid_client"}))
    process = authoriser(oauth_profile(provider), client, keys)

    assert process.renew(process.credentials()) is False
    assert stored(client, keys)["invalid"] is True
    with pytest.raises(AuthError) as caught:
        process.credentials()
    assert not caught.value.retryable
    assert provider.token_calls() == 1
    assert refused.version == stored(client, keys)["version"]


def test_renew_while_the_endpoint_is_down_asks_for_a_retry(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    store_token(client, keys, expires_in_s=600)
    provider.api.script("/token", Reply(503))
    process = authoriser(oauth_profile(provider), client, keys)

    assert process.renew(process.credentials()) is True  # the job is retried, then backs off
    with pytest.raises(AuthError) as caught:
        process.credentials()
    assert caught.value.retryable


def test_waiting_too_long_for_another_renewal_is_retryable(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    client.set(keys.token_lock("svc"), "slow-holder", px=60_000)
    with pytest.raises(AuthError) as caught:
        authoriser(oauth_profile(provider), client, keys, wait_s=0.1).credentials()
    assert caught.value.retryable
    assert provider.token_calls() == 0


def test_token_file_seeds_the_store_once(
        provider: Provider, client: redis.Redis[bytes], keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text(json.dumps({"access_token": "file-token-value", "refresh_token": "file-refresh",
                                "expires_at": time.time() + 3600}))
    path.chmod(0o600)
    profile = oauth_profile(provider, token_file=str(path))

    assert authoriser(profile, client, keys).credentials().headers["Authorization"] == \
        "Bearer file-token-value"
    assert stored(client, keys)["refresh_token"] == "file-refresh"
    assert provider.token_calls() == 0


def test_a_token_file_token_that_fails_its_test_is_refreshed(
        provider: Provider, client: redis.Redis[bytes], keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text(json.dumps({"access_token": "revoked-token", "refresh_token": "file-refresh",
                                "expires_in": 3600}))
    path.chmod(0o600)
    profile = oauth_profile(provider, token_file=str(path), test_url="/me")

    creds = authoriser(profile, client, keys).credentials()

    assert provider.api.hits("/api/me")  # the test was made
    assert provider.forms == [{"grant_type": "refresh_token", "refresh_token": "file-refresh"}]
    assert creds.headers["Authorization"] == f"Bearer {provider.issued[0]}"


def test_static_headers_go_with_the_token(provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    profile = oauth_profile(provider, headers={"X-Client-Id": "${CID}"}, header_key="X-Token",
                            header_prefix="")
    creds = authoriser(profile, client, keys).credentials()
    assert creds.headers == {"X-Client-Id": ENV["CID"], "X-Token": provider.issued[0]}


def test_client_secret_goes_in_the_form_with_client_auth_post(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    authoriser(oauth_profile(provider, client_auth="post"), client, keys).credentials()
    assert provider.forms[0]["client_secret"] == ENV["CSECRET"]
    assert "Authorization" not in provider.api.hits("/token")[0].headers


def test_the_token_is_only_under_its_key_and_never_logged(
        provider: Provider, client: redis.Redis[bytes], keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first = f"first-access-{uuid.uuid4().hex}"
    store_token(client, keys, expires_in_s=-1, refresh="refresh-secret-value", access=first)
    profile = oauth_profile(provider)
    process = authoriser(profile, client, keys)
    process.renew(process.credentials())
    provider.api.script("/token", Reply(401, json={"error": "invalid_client"}))
    assert process.renew(process.credentials()) is False

    secrets_seen = [*provider.issued, "refresh-secret-value", first]
    holding = {key for key, value in every_value(client).items()
               if any(secret in value for secret in secrets_seen)}
    assert holding == {keys.token("svc")}
    for secret in secrets_seen:
        assert secret not in caplog.text
    assert redact(provider.issued[-1]) in caplog.text


def test_a_refused_refresh_token_of_a_browser_profile_asks_for_the_browser_flow(
        provider: Provider, client: redis.Redis[bytes], keys: Keys) -> None:
    provider.api.script("/token", Reply(400, json={"error": "invalid_grant"}))
    store_token(client, keys, expires_in_s=-1, refresh="refresh-revoked")
    profile = oauth_profile(provider, auth_url=f"{provider.url}/authorize", redirect_port=free_port())
    with pytest.raises(AuthError, match="run `reqworker auth svc` again") as caught:
        authoriser(profile, client, keys).credentials()
    assert not caught.value.retryable
    assert provider.token_calls() == 1  # no client-credentials grant for a user's profile
