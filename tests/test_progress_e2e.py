"""Following batches from the command line, with a real worker: watch, results -o, batches."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import REQWORKER, WorkerProcess, eventually, run_cli
from tests.support.loopback import Hit, LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack, one_worker

pytestmark = pytest.mark.integration

RELEASE = threading.Event()


def _held(hit: Hit) -> Reply | None:
    """Requests under /held wait until the test lets them go."""
    if hit.path.startswith("/held"):
        RELEASE.wait(120)
        return Reply(json={"held": hit.path})
    return None


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with LoopbackAPI(fallback=_held) as api, \
            make_stack(redis_server.url, api, tmp_path_factory.mktemp("progress")) as s:
        yield s
        RELEASE.set()


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    yield from one_worker(stack, concurrency=4, name="progress-worker")


def test_watch_attached_to_a_half_finished_batch_reports_only_what_it_saw(
        stack: Stack, worker: WorkerProcess) -> None:
    RELEASE.clear()
    tag = uuid.uuid4().hex[:8]
    jobs = [{"api": "seed", "path": f"/echo/{tag}/{i}"} for i in range(10)]
    jobs += [{"api": "seed", "path": f"/held/{tag}/{i}"} for i in range(10)]
    batch = stack.client.submit_many(jobs, name="half").batch
    eventually(lambda: batch.status().succeeded == 10, within_s=60, what="the first half")

    err_path = stack.tmp / f"watch-{tag}.err"
    with open(err_path, "w") as err:
        watch = subprocess.Popen([*REQWORKER, "watch", batch.id], env=stack.env, stdout=subprocess.PIPE,
                                 stderr=err, text=True)
    try:
        first = eventually(lambda: err_path.read_text().splitlines()[:1], within_s=60,
                           what="watch's first line")[0]
        RELEASE.set()
        out, _ = watch.communicate(timeout=120)
    finally:
        RELEASE.set()
        watch.kill()
    lines = err_path.read_text().splitlines()
    # At attach it knows how much is done, but nothing yet of how fast.
    assert first.startswith("10/20 done"), first
    assert "- jobs/s, eta -" in first, first
    assert lines[-2].startswith("20/20 done")
    assert lines[-1].startswith("10 jobs finished while watching"), lines[-1]
    assert watch.returncode == 0
    assert "succeeded  20" in out


def _read_pty(master: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def _stderr_on_a_terminal(stack: Stack, *args: str) -> tuple[int, str]:
    """Run a command with its stderr on a pseudo-terminal; its exit code and what it showed there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*REQWORKER, *args], env=stack.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    try:
        shown = _read_pty(master)
        return proc.wait(timeout=120), shown
    finally:
        os.close(master)
        proc.kill()


def test_results_to_a_file_show_a_bar_on_a_terminal(stack: Stack, worker: WorkerProcess,
                                                     tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    batch = stack.client.submit_many([{"api": "seed", "path": f"/echo/{tag}/{i}"} for i in range(30)]).batch
    batch.wait(poll_s=0.05, timeout_s=120)
    out = tmp_path / "results.jsonl"
    code, shown = _stderr_on_a_terminal(stack, "results", batch.id, "-o", str(out))
    assert code == 0
    assert "100% 30/30 results" in shown
    assert "[########################]" in shown
    assert len(out.read_text().splitlines()) == 30
    # Results on stdout, or stderr piped: no bar.
    code, shown = _stderr_on_a_terminal(stack, "results", batch.id)
    assert code == 0
    assert "results" not in shown
    done = run_cli(stack.env, "results", batch.id, "-o", str(out))
    assert done.returncode == 0
    assert done.stderr == ""


def test_batches_lists_the_newest_first_with_state_and_counts(stack: Stack, worker: WorkerProcess) -> None:
    names = [f"nightly-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    ids = []
    for name in names:
        report = stack.client.submit_many([{"api": "seed", "path": "/echo/b"},
                                           {"api": "seed", "path": "/nope"}], name=name)
        report.batch.wait(poll_s=0.05, timeout_s=120)
        ids.append(report.batch.id)
    unfinished = uuid.uuid4().hex
    stack.client.store.create(unfinished, "still-enqueuing")
    # A batch whose record expired with its results is left out (and forgotten).
    conn = redis.Redis.from_url(stack.env["REQWORKER_REDIS_URL"])
    conn.zadd(stack.client.store.keys.batches(), {"gone": 1.0})

    done = run_cli(stack.env, "batches", "--json", "--limit", "3")
    assert done.returncode == 0, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [b["batch_id"] for b in listed] == [unfinished, ids[2], ids[1]]
    assert listed[0]["state"] == "enqueuing"
    assert listed[0]["name"] == "still-enqueuing"
    newest = listed[1]
    assert newest["name"] == names[2]
    assert newest["state"] == "finished"
    assert (newest["succeeded"], newest["failed"], newest["pending"], newest["total"]) == (1, 1, 0, 2)
    assert newest["created"].endswith("+00:00")

    everything = run_cli(stack.env, "batches", "--json", "--limit", "100")
    assert "gone" not in everything.stdout
    assert conn.zscore(stack.client.store.keys.batches(), "gone") is None

    text = run_cli(stack.env, "batches")
    rows = text.stdout.splitlines()
    assert rows[0].split()[:3] == ["batch", "created", "(UTC)"]
    assert rows[2].startswith(ids[2])
    assert "finished" in rows[2]
    assert rows[2].endswith(names[2])
