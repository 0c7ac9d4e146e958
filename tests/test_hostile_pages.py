"""Hostile pagination against a real worker: loops, endless chains, cursors, links with credentials."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, run_cli
from tests.support.loopback import Hit, LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack, one_worker
from worker.jobs import Job
from worker.keys import Keys
from worker.redact import shown_url

pytestmark = pytest.mark.integration

SECRET = "graph-token-5f4e3d2c1b"

PROFILES = """
[apis.capped]
base_url = "{url}"
timeout = 5
max_pages = 3
"""


def pages(hit: Hit) -> Reply | None:
    """/endless/N links to N+1; /loop links to itself; /cycle/a and /cycle/b link to each other."""
    query = dict(part.split("=", 1) for part in hit.query.split("&") if part)
    if hit.path.startswith("/endless/"):
        n = int(query.get("n", 1))
        return Reply(json={"n": n, "next": f"{hit.path}?n={n + 1}"})
    if hit.path.startswith("/loop/"):
        return Reply(json={"next": f"{hit.path}?{hit.query}" if hit.query else hit.path})
    if hit.path.startswith("/cycle/"):
        other = "b" if query.get("at", "a") == "a" else "a"
        return Reply(json={"next": f"{hit.path}?at={other}"})
    if hit.path.startswith("/cursor/"):
        return Reply(json={"items": [1], "cursor": "eyJvZmZzZXQiOjV9"})
    if hit.path.startswith("/odata/"):
        n = int(query.get("n", 1))
        link = f"http://{hit.headers['Host']}{hit.path}?n={n + 1}&access_token={SECRET}"
        return Reply(json={"value": [n], **({"@odata.nextLink": link} if n < 3 else {})})
    return None


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with LoopbackAPI(fallback=pages) as api, \
            make_stack(redis_server.url, api, tmp_path_factory.mktemp("pages"),
                       extra_profiles=PROFILES) as s:
        yield s


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    yield from one_worker(stack, concurrency=4)


def chain(stack: Stack, job: dict[str, Any]) -> list[dict[str, Any]]:
    batch, _ = stack.client.submit(job)
    batch.wait(poll_s=0.05, timeout_s=120)
    return sorted(batch.results(), key=lambda r: r.get("page", 0))


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def test_a_next_link_back_to_the_same_page_stops_at_once(stack: Stack, worker: WorkerProcess) -> None:
    records = chain(stack, {"api": "fast", "path": unique("/loop"), "paginate": {"next": "$.next"}})
    assert [r["page"] for r in records] == [1]
    assert "repeats a page already fetched" in records[0]["pagination_stopped"]


def test_a_cycle_of_two_pages_stops_when_the_first_comes_round_again(
        stack: Stack, worker: WorkerProcess) -> None:
    records = chain(stack, {"api": "fast", "path": unique("/cycle"), "params": {"at": "a"},
                            "paginate": {"next": "$.next"}})
    assert [r["page"] for r in records] == [1, 2]
    assert "repeats" in records[-1]["pagination_stopped"]


def test_an_endless_chain_stops_at_the_profiles_max_pages_which_a_job_cannot_raise(
        stack: Stack, worker: WorkerProcess) -> None:
    records = chain(stack, {"api": "capped", "path": unique("/endless"),
                            "paginate": {"next": "$.next", "max_pages": 50}})
    assert [r["body"]["n"] for r in records] == [1, 2, 3]
    assert records[-1]["pagination_stopped"] == "max_pages (3) reached"


def test_the_default_max_pages_is_1000(stack: Stack, worker: WorkerProcess) -> None:
    assert stack.client.profiles["fast"].max_pages == 1000


def test_a_cursor_token_is_refused_as_a_next_url_with_a_clear_message(
        stack: Stack, worker: WorkerProcess) -> None:
    path = unique("/cursor")
    records = chain(stack, {"api": "fast", "path": path, "paginate": {"next": "$.cursor"}})
    assert len(records) == 1
    assert records[0]["ok"] is True
    assert "is not a URL" in records[0]["pagination_stopped"]
    assert len(stack.api.hits(path)) == 1
    assert not any("eyJ" in h.path for h in stack.api.hits())


def test_a_bracket_path_follows_odata_next_links_and_their_credentials_are_never_shown(
        stack: Stack, worker: WorkerProcess, redis_server: LocalRedis) -> None:
    path = unique("/odata")
    batch, _ = stack.client.submit({"api": "fast", "path": path,
                                    "paginate": {"next": "$['@odata.nextLink']"}})
    batch.wait(poll_s=0.05, timeout_s=120)
    records = sorted(batch.results(), key=lambda r: r["page"])
    assert [r["body"]["value"] for r in records] == [[1], [2], [3]]
    # The API got its token back on each page; nothing shown of the batch holds it.
    assert all(SECRET in h.query for h in stack.api.hits(path)[1:])
    # The API's own body holds its link as given; everything reqworker shows is redacted.
    assert SECRET not in json.dumps([{**r, "body": None} for r in records])
    assert "access_token=REDACTED" in records[1]["url"]
    shown = run_cli(stack.env, "results", batch.id)
    assert shown.returncode == 0
    assert not any(SECRET in json.loads(line)["url"] for line in shown.stdout.splitlines())
    client = redis.Redis.from_url(redis_server.url)
    prefix = Keys(stack.env["REQWORKER_KEY_PREFIX"]).batch(batch.id)
    stored = [client.dump(key) or b"" for key in client.scan_iter(f"{prefix}*")]
    assert stored
    assert not any(SECRET.encode() in value for value in stored)
    assert SECRET not in worker.log()


def test_flower_arguments_of_a_page_show_no_credential() -> None:
    job = Job(api="fast", url=f"https://api.example.com/v1/items?n=2&access_token={SECRET}&sig=abc")
    shown = job.shown_arguments("batch-1")
    assert SECRET not in shown
    assert "abc" not in shown
    assert "access_token=REDACTED" in shown
    assert shown_url("https://u:p@api.example.com/x?pageToken=next-3&page=2") == \
        "https://REDACTED@api.example.com/x?pageToken=next-3&page=2"
