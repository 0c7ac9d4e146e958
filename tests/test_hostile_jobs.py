"""What a job may ask for, and what enqueue does with hostile input: headers, paths, bytes.

Pure checks of the job contract first, then ``reqworker enqueue`` against a real worker.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.demo.localredis import LocalRedis
from producer.jsonl import read_jobs, read_lines
from tests.support import WorkerProcess, run_cli
from tests.support.loopback import LoopbackAPI
from tests.support.stack import Stack, make_stack, one_worker
from worker.jobs import JobError, parse_job
from worker.profiles import Profile

PROFILES = {"ex": Profile(name="ex", base_url="https://api.example.com/v1")}


def refused(job: dict[str, Any]) -> JobError:
    with pytest.raises(JobError) as info:
        parse_job(job, PROFILES)
    return info.value


@pytest.mark.parametrize("name", [
    "Host", "host", "Cookie", "Connection", "Transfer-Encoding", "Content-Length", "TE", "Upgrade",
    "Proxy-Connection", "Proxy-Foo", "X-Forwarded-For", "X-Forwarded-Host", "X-HTTP-Method-Override",
    "X-Original-URL", "X-Rewrite-URL", "Keep-Alive", "Forwarded", "Accept-Encoding",
])
def test_a_job_may_not_set_routing_framing_or_cookie_headers(name: str) -> None:
    err = refused({"api": "ex", "path": "/x", "headers": {name: "evil.example.com"}})
    assert err.field == f"headers.{name}"
    assert "may not set" in err.message


@pytest.mark.parametrize("value", ["€", "a\nb", "a\rb", "\x00", "\x7f", " lead", "trail ", "😀"])
def test_a_header_value_outside_printable_latin1_is_refused(value: str) -> None:
    err = refused({"api": "ex", "path": "/x", "headers": {"X-Note": value}})
    assert err.field == "headers.X-Note"
    assert "Latin-1" in err.message


def test_ordinary_headers_and_latin1_values_are_kept() -> None:
    headers = {"Accept": "text/csv", "X-Note": "café, tab\tinside", "If-None-Match": '"abc"'}
    assert parse_job({"api": "ex", "path": "/x", "headers": headers}, PROFILES).headers == headers


@pytest.mark.parametrize("path", [
    "/a/..;/admin", "/a/..;x=1/admin", "/a/%252e%252e/admin", "/a/%25252e%25252e/admin",
    "/a/.%252e/admin", "/a/%2e%2e;/admin", "/a/%252f/admin", "/a/..%3b/admin",
])
def test_dot_dot_segments_however_disguised_are_refused(path: str) -> None:
    assert "'..'" in refused({"api": "ex", "path": path}).message
    url = f"https://api.example.com/v1{path}"
    assert "'..'" in refused({"api": "ex", "url": url}).message


def test_ordinary_segments_with_dots_percents_and_semicolons_pass() -> None:
    for path in ("/a/b.c/..d", "/a/%25/x", "/a/x;y=1", "/a/...", "/a/%20b"):
        parse_job({"api": "ex", "path": path}, PROFILES)


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("jobs")) as s:
        yield s


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    yield from one_worker(stack, concurrency=2)


@pytest.mark.integration
def test_enqueue_refuses_hostile_headers_and_paths_naming_the_line_and_runs_the_rest(
        stack: Stack, worker: WorkerProcess, tmp_path: Path) -> None:
    run = f"/echo/{uuid.uuid4().hex[:8]}"
    lines = [
        {"api": "fast", "path": f"{run}/ok", "key": "good"},
        {"api": "fast", "path": f"{run}/host", "headers": {"Host": "internal.example"}},
        {"api": "fast", "path": f"{run}/euro", "headers": {"X-Price": "5 €"}},
        {"api": "fast", "path": f"{run}/..;/admin"},
        {"api": "fast", "path": f"{run}/%252e%252e/admin"},
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = run_cli(stack.env, "enqueue", str(jobs), "--wait")
    assert done.returncode == 2, done.stderr
    assert "line 2" in done.stderr
    assert "headers.Host" in done.stderr
    assert "line 3" in done.stderr
    assert "headers.X-Price" in done.stderr
    assert "line 4" in done.stderr
    assert "line 5" in done.stderr
    assert "succeeded  1" in done.stderr
    assert [h.path for h in stack.api.hits() if h.path.startswith(run)] == [f"{run}/ok"]


DEEP = b'{"api": "fast", "path": "/x", "json": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
HUGE_NUMBER = b'{"api": "fast", "path": "/x", "key": ' + b"9" * 5000 + b"}"
LONG_LINE = b'{"api": "fast", "path": "/x", "key": "' + b"k" * (1024 * 1024 + 10) + b'"}'


def decoded(data: bytes) -> list[tuple[int, Any]]:
    return list(read_jobs(read_lines(io.BytesIO(data))))


@pytest.mark.parametrize("line", [b'{"api": "fast", "path": "/caf\xe9"}', DEEP, HUGE_NUMBER, LONG_LINE])
def test_a_hostile_line_is_refused_naming_it_and_the_next_line_is_read(line: bytes) -> None:
    got = decoded(b'{"api": "fast", "path": "/a"}\n' + line + b'\n{"api": "fast", "path": "/b"}\n')
    assert [n for n, _ in got] == [1, 2, 3]
    assert isinstance(got[1][1], JobError)
    assert not isinstance(got[2][1], JobError)
    assert got[2][1]["path"] == "/b"


def test_a_byte_order_mark_on_line_one_is_accepted() -> None:
    got = decoded(b'\xef\xbb\xbf{"api": "fast", "path": "/a"}\r\n{"api": "fast", "path": "/b"}')
    assert [job["path"] for _, job in got] == ["/a", "/b"]


def test_the_batch_is_marked_enqueued_whatever_stops_the_input(stack: Stack) -> None:
    def items() -> Iterator[tuple[int, Any]]:
        yield 1, {"api": "fast", "path": "/echo/first"}
        raise OSError("the input went away")

    with pytest.raises(OSError, match="the input went away"):
        stack.client.submit_numbered(items(), name="interrupted")
    newest = stack.client.store.client.zrevrange(stack.client.store.keys.batches(), 0, 0)[0]
    facts = stack.client.store.facts(newest.decode())
    assert facts["name"] == "interrupted"
    assert facts["enqueued"] == "1"


@pytest.mark.integration
def test_enqueue_refuses_each_hostile_line_and_the_batch_still_finishes(
        stack: Stack, worker: WorkerProcess, tmp_path: Path) -> None:
    run = f"/echo/{uuid.uuid4().hex[:8]}"
    good = [json.dumps({"api": "fast", "path": f"{run}/{i}"}).encode() for i in range(2)]
    lines = [b"\xef\xbb\xbf" + good[0], b'{"api": "fast", "path": "/\xff\xfe"}', DEEP, HUGE_NUMBER,
             LONG_LINE, good[1]]
    jobs = tmp_path / "hostile.jsonl"
    jobs.write_bytes(b"\n".join(lines) + b"\n")
    done = run_cli(stack.env, "enqueue", str(jobs), "--wait")
    assert done.returncode == 2, done.stderr
    for number in (2, 3, 4, 5):
        assert f"line {number}" in done.stderr
    assert "line 1:" not in done.stderr
    assert "line 6" not in done.stderr
    assert "UTF-8" in done.stderr
    assert "nested too deeply" in done.stderr
    assert "longer than 1048576 bytes" in done.stderr
    assert "succeeded  2" in done.stderr
    assert sorted(h.path for h in stack.api.hits() if h.path.startswith(run)) == [
        f"{run}/0", f"{run}/1"]


def test_a_json_body_nested_too_deep_to_publish_is_refused() -> None:
    deep: Any = []
    for _ in range(990):
        deep = [deep]
    err = refused({"api": "ex", "method": "POST", "path": "/x", "json": deep})
    assert err.field == "json"
    assert "nested more than 200 deep" in err.message
    shallow: Any = {"a": [{"b": [1, 2, {"c": None}]}]}
    assert parse_job({"api": "ex", "method": "POST", "path": "/x", "json": shallow}, PROFILES).json == shallow
