"""Redis clients from URLs: plain, TLS and Sentinel, read alike by every part of reqworker."""

from __future__ import annotations

import pytest
import redis
from celery import Celery
from celery.backends.redis import SentinelBackend
from redis.sentinel import SentinelConnectionPool

from celeryconfig import celery_settings
from tests.support.deployfiles import deploy_profiles
from worker.redisconn import connect, describe_redis_error
from worker.redisurl import SentinelURL, is_redis_url, is_sentinel_url, is_tls_url
from worker.resultstore import FinishedStaysFinishedSentinel, guarded
from worker.settings import Settings, SettingsError, redact_url
from worker.startup import StartupError, check_visibility

SENTINELS = "sentinel://:pw@s1:26380/2;sentinel://s2;sentinel://s3:26381"


def sentinel_settings(**extra: str) -> Settings:
    return Settings.from_env({"REQWORKER_REDIS_URL": SENTINELS,
                              "REQWORKER_SENTINEL_MASTER": "primary", **extra})


def test_a_sentinel_url_lists_sentinels_and_the_primarys_password_and_database() -> None:
    parsed = SentinelURL.parse(SENTINELS)
    assert parsed.sentinels == (("s1", 26380), ("s2", 26379), ("s3", 26381))
    assert (parsed.password, parsed.db) == ("pw", 2)


@pytest.mark.parametrize(("url", "kinds"), [
    ("redis://r:6379/0", {"redis"}),
    ("rediss://r:6380/0?ssl_cert_reqs=required", {"redis", "tls"}),
    ("unix:///run/redis.sock?db=1", {"redis"}),
    (SENTINELS, {"redis", "sentinel"}),
    ("amqp://guest@rabbit//", set()),
    ("redis", set()),
    ("http://redis://r", set()),
])
def test_each_kind_of_redis_url_is_told_by_its_scheme(url: str, kinds: set[str]) -> None:
    told = {"redis": is_redis_url(url), "tls": is_tls_url(url), "sentinel": is_sentinel_url(url)}
    assert {kind for kind, yes in told.items() if yes} == kinds


@pytest.mark.parametrize("url", ["sentinel://s1/x", "sentinel://s1;redis://r", "sentinel://"])
def test_a_sentinel_url_that_cannot_be_read_is_refused_by_the_settings(url: str) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        Settings.from_env({"REQWORKER_REDIS_URL": url, "REQWORKER_SENTINEL_MASTER": "m"})


def test_a_sentinel_url_needs_the_primarys_name() -> None:
    with pytest.raises(SettingsError, match="REQWORKER_SENTINEL_MASTER") as refused:
        Settings.from_env({"REQWORKER_CACHE_URL": SENTINELS})
    assert "pw" not in str(refused.value)


def test_every_address_of_a_sentinel_url_is_redacted() -> None:
    shown = redact_url("sentinel://:pw1@s1:26379/0;sentinel://:pw2@s2:26379")
    assert "pw1" not in shown
    assert "pw2" not in shown
    assert shown.count("***") == 2


def test_the_client_asks_the_sentinels_for_the_named_primary() -> None:
    client = connect(SENTINELS, sentinel_settings())
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "primary"
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["db"] == 2
    hosts = [c.connection_pool.connection_kwargs["host"] for c in pool.sentinel_manager.sentinels]
    assert hosts == ["s1", "s2", "s3"]


def test_broker_and_result_backend_go_through_sentinel_with_the_guard() -> None:
    conf = celery_settings(sentinel_settings())
    assert conf["broker_transport"] == "worker.transport:SentinelTransport"
    assert conf["broker_transport_options"]["master_name"] == "primary"
    assert conf["result_backend_transport_options"]["master_name"] == "primary"
    app = Celery("s", set_as_current=False)
    app.conf.update(conf)
    backend = app.backend
    assert isinstance(backend, FinishedStaysFinishedSentinel)
    assert isinstance(backend, SentinelBackend)
    assert guarded("redis://h/0") != guarded(SENTINELS)
    plain = celery_settings(Settings.from_env({"REQWORKER_REDIS_URL": "redis://h:6379/0"}))
    assert plain["broker_transport"] == "worker.transport:Transport"
    assert "master_name" not in plain["broker_transport_options"]


def test_the_visibility_check_applies_to_a_sentinel_broker() -> None:
    settings = sentinel_settings(REQWORKER_VISIBILITY_TIMEOUT="10")
    assert settings.broker_is_redis
    with pytest.raises(StartupError, match="REQWORKER_VISIBILITY_TIMEOUT"):
        check_visibility(settings, deploy_profiles())


@pytest.mark.parametrize(("error", "says"), [
    (redis.ConnectionError("Error 111 connecting to h:1. Connection refused."), "cannot connect"),
    (redis.AuthenticationError("invalid username-password pair"), "authentication failed"),
    (redis.ResponseError("NOAUTH Authentication required."), "authentication failed"),
    # as redis-py raises them: the error code is the class, not part of the message
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),  # type: ignore[attr-defined]
     "out of memory"),
    (redis.TimeoutError("Timeout reading from socket"), "timed out"),
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
     "read-only replica"),
])
def test_redis_errors_are_told_in_words(error: Exception, says: str) -> None:
    assert says in describe_redis_error(error)
