"""The job contract: what is accepted, what is refused, and what the refusal names."""

from __future__ import annotations

import random
from dataclasses import FrozenInstanceError, fields
from typing import Any

import pytest

from worker.jobs import _PLAIN_REST, Job, JobError, _check_under_base, parse_job
from worker.profiles import AuthConfig, Profile

PROFILES = {
    "ex": Profile(name="ex", base_url="https://api.example.com/v1"),
    "keyed": Profile(name="keyed", base_url="http://127.0.0.1:8080",
                     auth=AuthConfig(kind="bearer", header_key="X-API-Key", header_prefix="")),
}


def refused(job: dict[str, Any]) -> JobError:
    with pytest.raises(JobError) as info:
        parse_job(job, PROFILES)
    return info.value


def test_a_minimal_job_gets_the_documented_defaults() -> None:
    job = parse_job({"api": "ex", "path": "/tracks/1"}, PROFILES)
    assert job.url == "https://api.example.com/v1/tracks/1"
    assert (job.method, job.cache, job.refresh, job.key, job.retry_unsafe) == (
        "GET", True, False, None, False)


def test_a_full_job_round_trips_through_its_message_form() -> None:
    raw = {"api": "ex", "method": "post", "path": "tracks", "params": {"market": "GB"},
           "json": {"a": [1, 2]}, "headers": {"X-Trace": "1"}, "key": "track-1"}
    job = parse_job(raw, PROFILES)
    assert job.method == "POST"
    assert job.url == "https://api.example.com/v1/tracks"
    assert parse_job(job.to_message(), PROFILES) == job


def test_a_parsed_job_has_every_field_of_a_job_made_by_its_constructor() -> None:
    job = parse_job({"api": "ex", "path": "/tracks/1", "key": 7}, PROFILES)
    assert list(vars(job)) == [f.name for f in fields(Job)]
    assert job == Job(**vars(job))
    with pytest.raises(FrozenInstanceError):
        job.url = "https://api.example.com/v1/other"  # type: ignore[misc]


def test_absolute_url_under_base_is_accepted() -> None:
    job = parse_job({"api": "ex", "url": "https://API.example.com:443/v1/x?y=1"}, PROFILES)
    assert job.url == "https://API.example.com:443/v1/x?y=1"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://api.example.com/v2/x", "not under"),
        ("https://api.example.com/v10", "not under"),
        ("http://api.example.com/v1/x", "not under"),
        ("https://api.example.com:8443/v1/x", "not under"),
        ("https://evil.com/v1/x", "not under"),
        ("https://api.example.com.evil.com/v1/x", "not under"),
        ("https://user:pw@api.example.com/v1/x", "user name"),
        ("https://api.example.com@evil.com/v1/x", "user name"),
        ("https://api.example.com/v1/../admin", "'..'"),
        ("https://api.example.com/v1/%2e%2e/admin", "'..'"),
        ("https://api.example.com/v1/a%2Fb", "encoded slashes"),
        ("https://api.example.com/v1\\..\\admin", "backslashes"),
        ("ftp://api.example.com/v1/x", "not under"),
        ("https://api.example.com/v1/x#frag", "fragment"),
    ],
)
def test_urls_outside_base_url_are_refused(url: str, why: str) -> None:
    err = refused({"api": "ex", "url": url})
    assert err.field == "url"
    assert why in err.message


def test_a_path_cannot_smuggle_another_host() -> None:
    assert refused({"api": "ex", "path": "//evil.com/x"}).field == "path"
    assert refused({"api": "ex", "path": "https://evil.com/x"}).field == "path"
    assert "'..'" in refused({"api": "ex", "path": "/../admin"}).message


@pytest.mark.parametrize(
    ("job", "field", "words"),
    [
        ({"path": "/x"}, "api", "required"),
        ({"api": "nope", "path": "/x"}, "api", "no profile named 'nope'"),
        ({"api": "ex"}, "path", "either path"),
        ({"api": "ex", "path": "/x", "url": "https://api.example.com/v1/x"}, "path", "not both"),
        ({"api": "ex", "path": "/x", "method": "FETCH"}, "method", "not one of"),
        ({"api": "ex", "path": "/x", "cache": "yes"}, "cache", "true or false"),
        ({"api": "ex", "path": "/x", "cache": False, "refresh": True}, "refresh", "needs cache"),
        ({"api": "ex", "path": "/x", "json": {}, "data": "a"}, "json", "not both"),
        ({"api": "ex", "path": "/x", "params": {"a": {"b": 1}}}, "params.a", "string"),
        ({"api": "ex", "path": "/x", "headers": {"X": 1}}, "headers.X", "string"),
        ({"api": "ex", "path": "/x", "key": [1]}, "key", "string or a number"),
        ({"api": "ex", "path": "/x", "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_jobs_are_refused_naming_the_field(job: dict[str, Any], field: str, words: str) -> None:
    err = refused(job)
    assert err.field == field
    assert words in err.message


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Proxy-Authorization"])
def test_credentials_in_job_headers_are_refused(name: str) -> None:
    err = refused({"api": "ex", "path": "/x", "headers": {name: "Bearer abc"}})
    assert err.field == f"headers.{name}"
    assert "credentials come only from the profile" in err.message


def test_the_profiles_own_credential_header_is_refused_too() -> None:
    err = refused({"api": "keyed", "path": "/x", "headers": {"x-api-key": "abc"}})
    assert err.field == "headers.x-api-key"


def test_a_job_that_is_not_an_object_is_refused() -> None:
    assert "JSON object" in str(refused([1, 2]))  # type: ignore[arg-type]


#: Pieces of paths: plain ones, and every kind the full URL check must see.
_PIECES = ["a", "B9", "-", "_", "~", ".", "..", "/", "//", "%2e", "%2E", "%2f", "%252e", "%", ";",
           "?", "#", "@", ":", "=", "&", "!", "'", "(", "*", "+", ",", "$", "\\", " ", "\t", "\n",
           "\x00", "\x7f", "é", "[", "]", "|", '"', "{"]


def _full_check(field: str, value: str, base_url: str) -> tuple[str, str]:
    """What ``_resolve_url`` answered before its quick path: the URL, or the refusal."""
    if field == "path":
        if "://" in value or value.startswith("//"):
            return "error", "path: is a path under base_url; put an absolute URL in url"
        value = base_url + "/" + value.lstrip("/")
    try:
        _check_under_base(value, base_url, field)
    except JobError as exc:
        return "error", str(exc)
    return "ok", value


@pytest.mark.parametrize("base_url", ["https://api.example.com/v1", "http://127.0.0.1:8080",
                                      "https://Api.Example.com:443/a.b/c"])
def test_the_quick_url_path_judges_every_path_and_url_as_the_full_check_does(base_url: str) -> None:
    profiles = {"p": Profile(name="p", base_url=base_url)}
    rng = random.Random(11)
    quick = 0
    for _ in range(6000):
        rest = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 10)))
        quick += bool(_PLAIN_REST.match(rest.lstrip("/")))
        for field, value in (("path", rest), ("url", base_url + "/" + rest)):
            try:
                got = "ok", parse_job({"api": "p", field: value}, profiles).url
            except JobError as exc:
                got = "error", str(exc)
            assert got == _full_check(field, value, base_url), (field, value)
    assert quick > 500  # the quick path was taken often enough to be tested
