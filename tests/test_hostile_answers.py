"""A hostile API's answers against a real worker: strange waits, huge and slow bodies, cookies.

The loopback API misbehaves on purpose; every test checks what a user of the fleet relies on.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, base_env
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, countdowns, make_stack, one_worker
from worker.cache import CACHE_MAX_BODY
from worker.keys import Keys

pytestmark = pytest.mark.integration

PROFILES = """
[apis.adaptive]
base_url = "{url}/adaptive"
timeout = 5
adaptive_rate = true
backoff = { start = 0.05, factor = 2, count = 2 }

[apis.small]
base_url = "{url}/small"
timeout = 5
max_body = "64KiB"
backoff = { start = 0.05, factor = 2, count = 2 }

[apis.based]
base_url = "{url}/based"
timeout = 5

[apis.anywhere]
base_url = "{url}/anywhere"
timeout = 5
follow_redirects = "any"

[apis.listed]
base_url = "{url}/listed"
timeout = 5
follow_redirects = ["{url}/cdn"]

[apis.obedient]
base_url = "{url}/obedient"
timeout = 5
cache_expire = "1h"
cache_control = true

[apis.dripping]
base_url = "{url}/drip"
timeout = 1
backoff = { start = 0.05, factor = 2, count = 1 }
"""


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("hostile"),
                    extra_profiles=PROFILES) as s:
        yield s


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    yield from one_worker(stack, concurrency=4)


@pytest.fixture
def cache(redis_server: LocalRedis) -> Iterator[redis.Redis[bytes]]:
    conn = redis.Redis.from_url(redis_server.url)
    yield conn
    conn.close()


def unique(prefix: str = "/r") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def pause_ttl_ms(stack: Stack, cache: redis.Redis[bytes], profile: str) -> int:
    return int(cache.pttl(Keys(stack.env["REQWORKER_KEY_PREFIX"]).pause(profile)))


def test_a_retry_after_of_years_fails_that_job_only_and_pauses_nobody(
        stack: Stack, worker: WorkerProcess, cache: redis.Redis[bytes]) -> None:
    path = unique()
    stack.api.script(path, Reply(429, headers={"Retry-After": "100000000"}))
    record = stack.run({"api": "seed", "path": path})
    assert record["ok"] is False
    assert record["attempts"] == 1
    assert "Retry-After" in record["error"]["message"]
    assert pause_ttl_ms(stack, cache, "seed") == -2  # no pause key at all
    later = unique()
    stack.api.script(later, Reply(json={"fine": True}))
    assert stack.run({"api": "seed", "path": later})["ok"] is True


@pytest.mark.parametrize("value", ["1e300", "nan", "inf", "-5", "12.5", "9" * 5000])
def test_a_retry_after_that_is_not_an_http_form_counts_as_absent(
        stack: Stack, worker: WorkerProcess, cache: redis.Redis[bytes], value: str) -> None:
    path = unique()
    stack.api.script(path, Reply(503, headers={"Retry-After": value}), Reply(json={"n": 2}))
    record = stack.run({"api": "fast", "path": path})
    if value == "9" * 5000:  # digits: a valid form, far too long to wait
        assert record["ok"] is False
        assert record["attempts"] == 1
        assert "Retry-After" in record["error"]["message"]
    else:  # the seed's backoff instead: a finite countdown, and a job that ends
        assert record["ok"] is True
        assert record["attempts"] == 2
        assert countdowns(worker.log(), record["job_id"]) == [0.05]
    assert pause_ttl_ms(stack, cache, "fast") == -2


@pytest.mark.parametrize("reset", ["1e300", "nan", "-1", "100000000"])
def test_a_rate_limit_reset_never_pauses_longer_than_the_profile_waits(
        stack: Stack, worker: WorkerProcess, cache: redis.Redis[bytes], reset: str) -> None:
    path = unique("/adaptive/r")
    stack.api.script(path, Reply(json={}, headers={"X-RateLimit-Remaining": "0",
                                                   "X-RateLimit-Reset": reset}))
    assert stack.run({"api": "adaptive", "path": path[len("/adaptive"):]})["ok"] is True
    ttl = pause_ttl_ms(stack, cache, "adaptive")
    if reset == "100000000":  # a real number of seconds: the pause is capped, and expires
        assert 0 < ttl <= 0.35 * 1000 + 1
    else:
        assert ttl == -2


def peak_rss_kib(worker: WorkerProcess) -> int:
    status = Path(f"/proc/{worker.proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    return b"".join(packer.compress(block) for _ in range(size // len(block))) + packer.flush()


def test_a_gzip_bomb_fails_with_response_too_large_and_the_worker_stays_small(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/small/bomb")
    bomb = gzip_of_zeros(512 * 1024 * 1024)
    stack.api.script(path, Reply(raw=bomb, headers={"Content-Encoding": "gzip"}))
    before = peak_rss_kib(worker)
    record = stack.run({"api": "small", "path": path[len("/small"):]})
    assert record["ok"] is False
    assert record["attempts"] == 1
    assert record["error"]["type"] == "ResponseTooLarge"
    assert "max_body = 65536 bytes" in record["error"]["message"]
    assert len(stack.api.hits(path)) == 1  # not retried: the answer would be as large again
    assert peak_rss_kib(worker) - before < 64 * 1024  # 512 MiB were never held


def test_an_answer_over_max_body_without_compression_fails_too(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/small/big")
    stack.api.script(path, Reply(text="x" * (64 * 1024 + 1)))
    record = stack.run({"api": "small", "path": path[len("/small"):]})
    assert record["error"]["type"] == "ResponseTooLarge"
    exact = unique("/small/exact")
    stack.api.script(exact, Reply(text="x" * (64 * 1024)))
    assert stack.run({"api": "small", "path": exact[len("/small"):]})["ok"] is True


def test_an_api_that_drips_its_answer_cannot_stretch_an_attempt_past_timeout(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/drip/r")
    # Each byte comes well within the per-read timeout; the whole would take 16 s.
    stack.api.script(path, Reply(text="x" * 20, drip_s=0.8))
    record = stack.run({"api": "dripping", "path": path[len("/drip"):]})
    assert record["ok"] is False
    assert record["attempts"] == 2
    assert record["error"]["type"] == "AttemptTimeout"
    # Dripped out in full, the answer would have been a success after 16 s: the attempt's
    # deadline, not a read timeout, ended it.
    assert "longer than timeout = 1 s" in record["error"]["message"]


def test_json_nested_100000_deep_gives_the_body_as_text(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    deep = b"[" * 100_000 + b"]" * 100_000
    stack.api.script(path, Reply(raw=deep))
    record = stack.run({"api": "fast", "path": path})
    assert record["ok"] is True
    assert record["body"] == deep.decode()


def test_an_answer_too_large_to_cache_is_not_cached(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(text="y" * (CACHE_MAX_BODY + 1)))
    first = stack.run({"api": "fast", "path": path})
    second = stack.run({"api": "fast", "path": path})
    assert first["ok"]
    assert second["ok"]
    assert second["from_cache"] is False
    assert len(stack.api.hits(path)) == 2


@pytest.mark.parametrize("cache", [True, False])
def test_a_cookie_set_by_one_job_is_never_sent_with_the_next(
        stack: Stack, worker: WorkerProcess, cache: bool) -> None:
    setter, reader = unique("/echo/set"), unique("/echo/read")
    stack.api.script(setter, Reply(json={}, headers={"Set-Cookie": "sid=victim-7d1e; Path=/"}))
    assert stack.run({"api": "fast", "path": setter, "cache": cache})["ok"]
    for _ in range(3):  # whichever worker thread runs it
        assert stack.run({"api": "fast", "path": unique("/echo/read"), "cache": cache})["ok"]
    assert stack.run({"api": "fast", "path": reader, "cache": cache})["ok"]
    seen = [h for h in stack.api.hits() if h.path.startswith("/echo/read/")]
    assert seen
    assert all("Cookie" not in h.headers and "cookie" not in h.headers for h in seen)


def test_cookies_are_never_written_to_the_cache(
        stack: Stack, worker: WorkerProcess, cache: redis.Redis[bytes]) -> None:
    path = unique("/echo/cookie")
    stack.api.script(path, Reply(json={"a": 1}, headers={"Set-Cookie": "sid=secret-cookie-91"}))
    first = stack.run({"api": "fast", "path": path})
    assert first["ok"]
    assert stack.run({"api": "fast", "path": path})["from_cache"] is True
    namespace = Keys(stack.env["REQWORKER_KEY_PREFIX"]).cache_namespace("fast")
    stored = [cache.get(key) or b"" for key in cache.scan_iter(f"{namespace}:*")
              if cache.type(key) == b"string"]
    assert stored
    assert not any(b"secret-cookie-91" in value for value in stored)


def test_by_default_a_redirect_off_base_url_is_the_answer_and_the_record_says_why(
        stack: Stack, worker: WorkerProcess) -> None:
    hop, outside = unique("/based/hop"), unique("/outside")
    stack.api.script(hop, Reply(302, headers={"Location": f"{outside}?access_token=leak-me-42"}))
    stack.api.script(outside, Reply(json={"internal": "secret"}))
    record = stack.run({"api": "based", "path": hop[len("/based"):]})
    assert record["ok"] is True
    assert record["status_code"] == 302
    assert "leaves base_url" in record["redirect_refused"]
    assert outside in record["redirect_refused"]
    assert "leak-me-42" not in str(record)
    assert stack.api.hits(outside) == []
    inside = unique("/based/in")
    stack.api.script(inside, Reply(json={"landed": True}))
    stack.api.script(hop, Reply(302, headers={"Location": inside}))
    assert stack.run({"api": "based", "path": hop[len("/based"):], "cache": False})["body"] == {
        "landed": True}


def test_a_307_never_resends_the_body_off_base_url(stack: Stack, worker: WorkerProcess) -> None:
    hop, outside = unique("/based/post"), unique("/outside")
    stack.api.script(hop, Reply(307, headers={"Location": outside}))
    record = stack.run({"api": "based", "method": "POST", "path": hop[len("/based"):],
                        "json": {"card": "4111"}})
    assert record["status_code"] == 307
    assert "redirect_refused" in record
    assert stack.api.hits(outside) == []
    assert len(stack.api.hits(hop)) == 1


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data/",
                                      "http://10.1.2.3/admin", "http://[fe80::1]/x",
                                      "http://192.168.0.1/"])
def test_any_never_leads_from_loopback_to_link_local_or_private_addresses(
        stack: Stack, worker: WorkerProcess, location: str) -> None:
    hop = unique("/anywhere/hop")
    stack.api.script(hop, Reply(302, headers={"Location": location}))
    record = stack.run({"api": "anywhere", "path": hop[len("/anywhere"):]})
    assert record["ok"] is True
    assert record["status_code"] == 302
    assert record["attempts"] == 1
    assert "address, and base_url is not one" in record["redirect_refused"]


def test_a_list_of_prefixes_allows_exactly_those(stack: Stack, worker: WorkerProcess) -> None:
    cdn, other, hop = unique("/cdn/f"), unique("/other"), unique("/listed/hop")
    stack.api.script(cdn, Reply(json={"from": "cdn"}))
    stack.api.script(hop, Reply(302, headers={"Location": cdn}))
    assert stack.run({"api": "listed", "path": hop[len("/listed"):], "cache": False})["body"] == {
        "from": "cdn"}
    stack.api.script(hop, Reply(302, headers={"Location": other}))
    refused = stack.run({"api": "listed", "path": hop[len("/listed"):], "cache": False})
    assert refused["status_code"] == 302
    assert "none of the follow_redirects" in refused["redirect_refused"]
    assert stack.api.hits(other) == []


def test_a_401_from_outside_base_url_renews_nothing(stack: Stack, worker: WorkerProcess) -> None:
    hop, foreign = unique("/secure/hop"), unique("/foreign")
    stack.api.script(hop, Reply(302, headers={"Location": foreign}))
    stack.api.script(foreign, Reply(401, json={"error": {"message": "who are you"}}))
    record = stack.run({"api": "bearer", "path": hop[len("/secure"):], "cache": False})
    assert record["ok"] is False
    assert record["status_code"] == 401
    assert record["attempts"] == 1
    assert "outside base_url" in record["error"]["message"]
    assert "Authorization" not in stack.api.hits(foreign)[0].headers


def test_a_jobs_headers_are_part_of_its_cache_key(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(text="a,b\n1,2"), Reply(json={"as": "json"}))
    csv = stack.run({"api": "fast", "path": path, "headers": {"Accept": "text/csv"}})
    plain = stack.run({"api": "fast", "path": path})
    assert csv["body"] == "a,b\n1,2"
    assert plain["body"] == {"as": "json"}
    assert plain["from_cache"] is False
    again = stack.run({"api": "fast", "path": path, "headers": {"accept": "text/csv"}})
    assert again["from_cache"] is True
    assert again["body"] == "a,b\n1,2"


def test_vary_is_honoured(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(json={"lang": "en"}, headers={"Vary": "X-Lang"}),
                     Reply(json={"lang": "fr"}, headers={"Vary": "X-Lang"}))
    en = stack.run({"api": "fast", "path": path, "headers": {"X-Lang": "en"}})
    fr = stack.run({"api": "fast", "path": path, "headers": {"X-Lang": "fr"}})
    assert (en["body"], fr["body"]) == ({"lang": "en"}, {"lang": "fr"})
    assert stack.run({"api": "fast", "path": path, "headers": {"X-Lang": "en"}})["body"] == {
        "lang": "en"}


def test_a_no_store_answer_is_never_stored(stack: Stack, worker: WorkerProcess) -> None:
    path = unique()
    stack.api.script(path, Reply(json={"n": 1}, headers={"Cache-Control": "private, no-store"}))
    records = [stack.run({"api": "fast", "path": path}) for _ in range(2)]
    assert [r["from_cache"] for r in records] == [False, False]
    assert len(stack.api.hits(path)) == 2


@pytest.mark.parametrize("header", ["max-age=0", "no-cache"])
def test_cache_control_true_follows_the_apis_cache_control(
        stack: Stack, worker: WorkerProcess, header: str) -> None:
    for api, cached in (("obedient", False), ("fast", True)):
        path = unique(f"/{api}/cc") if api == "obedient" else unique()
        stack.api.script(path, Reply(json={"v": 1}, headers={"Cache-Control": header}))
        job = {"api": api, "path": path[len("/obedient"):] if api == "obedient" else path}
        stack.run(job)
        assert stack.run(job)["from_cache"] is cached, api


def test_every_cache_entry_expires_and_no_redirect_alias_hash_is_written(
        stack: Stack, worker: WorkerProcess, cache: redis.Redis[bytes]) -> None:
    forever, hop, landing = unique("/obedient/f"), unique("/obedient/hop"), unique("/obedient/land")
    stack.api.script(forever, Reply(json={}, headers={"Cache-Control": "max-age=31536000, immutable"}))
    stack.api.script(hop, Reply(301, headers={"Location": landing}))
    stack.api.script(landing, Reply(json={"landed": 1}))
    for path in (forever, hop):
        assert stack.run({"api": "obedient", "path": path[len("/obedient"):]})["ok"]
    namespace = Keys(stack.env["REQWORKER_KEY_PREFIX"]).cache_namespace("obedient")
    keys = list(cache.scan_iter(f"{namespace}*"))
    assert keys
    assert all(0 < cache.ttl(key) <= 3600 + 3600 for key in keys)
    assert not any(key.endswith(b":redirects") for key in keys)


def test_no_api_body_reaches_the_worker_log_at_info(stack: Stack, worker: WorkerProcess) -> None:
    ok_path, bad_path = unique(), unique()
    stack.api.script(ok_path, Reply(json={"payload": "body-marker-ok-31"}))
    stack.api.script(bad_path, Reply(422, json={"error": {"message": "body-marker-bad " * 200}}))
    done = stack.run({"api": "fast", "path": ok_path, "key": "logged-job"})
    failed = stack.run({"api": "fast", "path": bad_path})
    assert done["body"] == {"payload": "body-marker-ok-31"}
    assert failed["error"]["message"].count("body-marker-bad") == 200  # the record keeps it whole
    log = worker.log()
    assert "body-marker-ok-31" not in log
    assert 0 < log.count("body-marker-bad") < 30
    assert "succeeded in" in log
    assert "key=logged-job" in log


def test_a_retry_that_cannot_be_scheduled_fails_the_job_with_a_record(
        redis_server: LocalRedis, loopback_api: LoopbackAPI, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.exceptions import Reject

    from worker import runtime as worker_runtime
    from worker.errors import JobFailed
    from worker.tasks import request

    apis = tmp_path / "apis.toml"
    apis.write_text(f'[apis.fast]\nbase_url = "{loopback_api.url}"\ntimeout = 5\n')
    for name, value in base_env(redis_server.url, str(apis),
                                REQWORKER_KEY_PREFIX=f"rj{uuid.uuid4().hex[:6]}").items():
        monkeypatch.setenv(name, value)
    path = unique()
    loopback_api.script(path, Reply(503))

    def broker_refuses(*args: object, **kwargs: object) -> None:
        raise Reject("the broker refused the retry", requeue=False)

    monkeypatch.setattr(request, "retry", broker_refuses)
    worker_runtime.reset()
    try:
        outcome = request.apply(kwargs={"job": {"api": "fast", "path": path, "key": "k"}})
    finally:
        worker_runtime.reset()
    assert outcome.state == "FAILURE"
    assert isinstance(outcome.result, JobFailed)
    record = outcome.result.record
    assert record["ok"] is False
    assert record["key"] == "k"
    assert record["attempts"] == 1
    assert record["error"]["type"] == "RetryError"
    assert "could not be scheduled" in record["error"]["message"]


def test_with_any_a_307_still_never_resends_the_body_off_base_url(
        stack: Stack, worker: WorkerProcess) -> None:
    hop, outside = unique("/anywhere/post"), unique("/elsewhere")
    stack.api.script(hop, Reply(307, headers={"Location": outside}))
    stack.api.script(outside, Reply(json={"got": "it"}))
    record = stack.run({"api": "anywhere", "method": "POST", "path": hop[len("/anywhere"):],
                        "json": {"card": "4111"}})
    assert record["status_code"] == 307
    assert "body again" in record["redirect_refused"]
    assert stack.api.hits(outside) == []
    moved = unique("/anywhere/get")
    stack.api.script(moved, Reply(302, headers={"Location": outside}))
    assert stack.run({"api": "anywhere", "path": moved[len("/anywhere"):]})["body"] == {"got": "it"}
