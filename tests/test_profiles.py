"""Loading apis.toml: defaults, ${ENV} expansion, and errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.durations import Rate, parse_duration_s, parse_rate
from worker.profiles import ProfileError, load_profiles
from worker.settings import Settings
from worker.startup import StartupError, check_visibility

GOOD = """
[apis.example]
base_url = "https://api.example.com/v1/"
rate_limit = "10/s"
cache_expire = "28d"
timeout = 30
backoff = { start = 0.5, factor = 1.5, count = 10 }

[apis.other.auth]
kind = "bearer"
token = "${OTHER_TOKEN}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "apis.toml"
    path.write_text(text)
    return path


def test_profiles_load_with_defaults(tmp_path: Path) -> None:
    text = GOOD + '\n[apis.other]\nbase_url = "http://127.0.0.1:9/x"\n'
    profiles = load_profiles(write(tmp_path, text), {"OTHER_TOKEN": "s3cret-token-value"})
    ex = profiles["example"]
    assert ex.base_url == "https://api.example.com/v1"
    assert ex.rate_limit == Rate(10, 1)
    assert ex.cache_expire_s == 28 * 86400
    other = profiles["other"]
    assert other.auth.kind == "bearer"
    assert other.auth.token is not None
    assert other.auth.token.reveal() == "s3cret-token-value"
    assert "s3cret" not in repr(other)
    assert other.timeout_s == 30
    assert other.backoff.count == 10


def test_a_missing_environment_variable_is_named(tmp_path: Path) -> None:
    text = GOOD + '\n[apis.other]\nbase_url = "http://127.0.0.1:9/x"\n'
    with pytest.raises(ProfileError, match=r"apis\.other\.auth\.token: environment variable "
                                           r"OTHER_TOKEN is not set"):
        load_profiles(write(tmp_path, text), {})


def test_the_producer_does_not_need_the_secrets(tmp_path: Path) -> None:
    text = GOOD + '\n[apis.other]\nbase_url = "http://127.0.0.1:9/x"\n'
    profiles = load_profiles(write(tmp_path, text), {}, with_secrets=False)
    assert profiles["other"].auth.token is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[apis.a]\nbase_url = "http://x"\ncolour = 1', "unknown setting 'colour' in [apis.a]"),
        ('[apis.a]\nbase_url = "http://x"\nbackoff = { begin = 1 }', "unknown setting 'begin'"),
        ('[apis.a]\nbase_url = "http://x"\n[apis.a.auth]\nkind = "magic"', "'magic' is not one of"),
        ('[apis.a]\nbase_url = "ftp://x"', "apis.a.base_url"),
        ('[apis.a]\nbase_url = "http://[::1"', "apis.a.base_url: 'http://[::1' is not an http(s) URL"),
        ('[apis.a]\nbase_url = "https://u:p@x"', "apis.a.base_url: must not carry a user name"),
        ('[apis.a]\nbase_url = "http://x"\nfollow_redirects = ["https://u@y/"]', "URL prefix"),
        ('[apis.a]\nbase_url = "http://x"\n[apis.a.auth]\nkind = "bearer"\ntoken = "t"\n'
         'header_key = "X Token"', "'X Token' is not a header name"),
        ('[apis.a]\nrate_limit = "10/s"', "base_url is required"),
        ('[apis.a]\nbase_url = "http://x"\nrate_limit = "fast"', "apis.a.rate_limit"),
        ('[apis.a]\nbase_url = "http://x"\ncache_expire = "soon"', "apis.a.cache_expire"),
        ('[apis.a]\nbase_url = "http://x"\ntimeout = 0', "apis.a.timeout"),
        ('[apis.a]\nbase_url = "http://x"\nbackoff = { count = -1 }', "apis.a.backoff.count"),
        ("[apis.a]\nbase_url = ", "not valid TOML"),
        ("title = 'x'", "unknown setting 'title'"),
    ],
)
def test_bad_profiles_are_errors_that_say_where(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ProfileError) as info:
        load_profiles(write(tmp_path, text), {})
    assert words in str(info.value)
    assert str(tmp_path / "apis.toml") in str(info.value)


def test_a_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="REQWORKER_APIS"):
        load_profiles(tmp_path / "nope.toml", {})


def test_durations_and_rates_parse() -> None:
    assert parse_duration_s("28d") == 28 * 86400
    assert parse_duration_s("0") == 0
    assert parse_duration_s(90) == 90
    assert parse_duration_s("1.5h") == 5400
    assert parse_rate("600/m").per_second == 10
    assert parse_rate("5/2s").per_second == 2.5
    with pytest.raises(ValueError, match="more than 0 requests"):
        parse_rate("0/s")


def test_settings_derive_every_url_from_the_one_switch() -> None:
    s = Settings.from_env({"REQWORKER_REDIS_URL": "redis://h:1/2"})
    assert (s.broker_url, s.result_backend, s.cache_url) == ("redis://h:1/2",) * 3
    s = Settings.from_env({"REQWORKER_REDIS_URL": "redis://h:1/2",
                           "REQWORKER_BROKER_URL": "amqp://guest@q//"})
    assert s.broker_url == "amqp://guest@q//"
    assert s.cache_url == "redis://h:1/2"
    assert not s.broker_is_redis


def test_worker_refuses_a_visibility_timeout_one_attempt_could_outlast(tmp_path: Path) -> None:
    text = GOOD + '\n[apis.other]\nbase_url = "http://127.0.0.1:9/x"\n'
    profiles = load_profiles(write(tmp_path, text), {}, with_secrets=False)
    short = Settings.from_env({"REQWORKER_VISIBILITY_TIMEOUT": "39"})
    with pytest.raises(StartupError, match="REQWORKER_VISIBILITY_TIMEOUT to 40 or more"):
        check_visibility(short, profiles)
    check_visibility(Settings.from_env({}), profiles)
    amqp = Settings.from_env({"REQWORKER_VISIBILITY_TIMEOUT": "39",
                              "REQWORKER_BROKER_URL": "amqp://localhost"})
    check_visibility(amqp, profiles)


def test_long_backoffs_need_no_longer_visibility_timeout(tmp_path: Path) -> None:
    """Countdowns wait in Redis, so only one attempt has to fit in the visibility timeout."""
    text = '[apis.patient]\nbase_url = "http://127.0.0.1:9"\ntimeout = 5\n' \
           "backoff = { start = 30, factor = 2, count = 12 }\n"
    profiles = load_profiles(write(tmp_path, text), {}, with_secrets=False)
    assert profiles["patient"].backoff.longest_countdown_s > 100_000
    check_visibility(Settings.from_env({"REQWORKER_VISIBILITY_TIMEOUT": "15"}), profiles)
