"""`reqworker demo`: the whole system on this machine, with nothing installed beforehand.

It starts a private redis-server, the demo API (``producer.demo.api``: OAuth, a rate
limit, latency, some 429s and 5xx), two worker processes and Flower; syncs a catalogue
of tracks and a few paginated playlists through them with live progress; prints what
happened; writes every result to ./reqworker-demo-results.jsonl; and stops everything it
started, Ctrl-C included. The API misbehaves deterministically, so the counts in the
summary are the same on every run (the number of tokens depends on how long it takes).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from producer.client import Batch, Client, Counts
from producer.demo.api import (
    PAGE_SIZE,
    RATE_PER_S,
    TOKEN_LIFETIME_S,
    TOKEN_PATH,
    DemoAPI,
    plan,
    playlist_pages,
)
from producer.demo.localredis import LocalRedis, free_port
from producer.demo.loopback import LoopbackAPI
from producer.demo.processes import stop_groups
from producer.progress import ProgressView
from worker.profiles import load_profiles
from worker.settings import Settings

RESULTS_FILE = "reqworker-demo-results.jsonl"
WORKERS, CONCURRENCY = 2, 4
#: Seconds a process gets to finish after SIGTERM before its process group is killed.
STOP_GRACE_S = 10.0
ROOT = Path(__file__).resolve().parents[2]
# The client id and secret reach the workers in their environment, never in this file.
PROFILE = """\
[apis.demo]
base_url = "{url}/v1"
rate_limit = "{rate}/s"
timeout = 5
cache_expire = "1h"
backoff = {{ start = 0.2, factor = 2, count = 4 }}

[apis.demo.auth]
kind = "oauth2"
token_url = "{url}{token_path}"
client_id = "${{DEMO_CLIENT_ID}}"
client_secret = "${{DEMO_CLIENT_SECRET}}"
test_expiry = 5
"""


@dataclass(frozen=True)
class Sync:
    """What the demo asks for: tracks, paginated playlists, then some tracks again."""

    tracks: int
    playlists: int
    again: list[int]

    @classmethod
    def of(cls, job_count: int) -> Sync:
        repeats = max(2, job_count // 10)
        playlists = max(2, min(10, job_count // 400))
        tracks = job_count - repeats - playlists
        return cls(tracks, playlists, [n for n in range(1, tracks + 1) if plan(n) == [200]][:repeats])

    @property
    def pages(self) -> int:
        return sum(playlist_pages(p) for p in range(1, self.playlists + 1))

    @property
    def total(self) -> int:
        """Jobs that finish: every one enqueued, and every page after a playlist's first."""
        return self.tracks + self.pages + len(self.again)

    def first_jobs(self) -> list[dict[str, Any]]:
        playlists = [{"api": "demo", "path": f"/playlists/{p}/tracks", "key": f"playlist-{p}",
                      "params": {"limit": PAGE_SIZE}, "paginate": {"next": "$.next"}}
                     for p in range(1, self.playlists + 1)]
        return [_track(n) for n in range(1, self.tracks + 1)] + playlists


def run_demo(job_count: int, flower: bool = True) -> int:
    """Run the demo; 0 when it ran (some demo jobs fail by design), 1 if it broke, 130 on Ctrl-C."""
    stack = ExitStack()
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:  # SIGTERM stops the demo the way Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _run(job_count, flower, stack)
        return 0
    except KeyboardInterrupt:
        _say("\ninterrupted: stopping what the demo started")
        return 130
    except Exception as exc:
        print(f"reqworker demo: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if on_main_thread:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stack.close()
            _say(f"stopped the workers{', Flower' if flower else ''}, the demo API and the "
                 "private Redis")
        finally:
            if on_main_thread:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous)


def _run(job_count: int, with_flower: bool, stack: ExitStack) -> None:
    if job_count < 10:
        raise ValueError("the demo needs at least 10 jobs")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="reqworker-demo-"))
    server = LocalRedis()
    stack.callback(server.stop)
    server.start()
    client_id, client_secret = "reqworker-demo", secrets.token_urlsafe(18)
    handler = DemoAPI(client_id, client_secret)
    api = LoopbackAPI(fallback=handler).start()
    stack.callback(api.stop)
    apis = work / "apis.toml"
    apis.write_text(PROFILE.format(url=api.url, rate=RATE_PER_S, token_path=TOKEN_PATH),
                    encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQWORKER_", "CELERY_"))}
    env.update(REQWORKER_REDIS_URL=server.url, REQWORKER_APIS=str(apis),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    _say(f"private Redis    {server.url}")
    _say(f"demo API         {api.url}/v1  (OAuth tokens for {TOKEN_LIFETIME_S} s from "
         f"{TOKEN_PATH}, {RATE_PER_S} requests/s at most)")
    _say(f"profile 'demo'   {apis}  (client id and secret: $DEMO_CLIENT_ID, $DEMO_CLIENT_SECRET)")

    procs = _Processes(work)
    stack.callback(procs.stop)
    for i in range(1, WORKERS + 1):
        procs.start(f"worker-{i}", ["worker", "--concurrency", str(CONCURRENCY), "--hostname",
                                    f"demo{i}@%h"],
                    {**env, "DEMO_CLIENT_ID": client_id, "DEMO_CLIENT_SECRET": client_secret})
    if with_flower:
        port, login = free_port(), f"demo:{secrets.token_urlsafe(9)}"
        procs.start("flower", ["flower", "--port", str(port), "--address", "127.0.0.1"],
                    {**env, "REQWORKER_FLOWER_BASIC_AUTH": login})
    _say(f"{WORKERS} workers        {CONCURRENCY} threads each; logs in {work}")
    for i in range(1, WORKERS + 1):
        procs.wait_ready(f"worker-{i}", lambda log: " ready." in log.read_text(errors="replace"))
    if with_flower:
        procs.wait_ready("flower", lambda _: _answers(f"http://127.0.0.1:{port}/healthcheck"))
        user, _, password = login.partition(":")
        _say(f"Flower           http://127.0.0.1:{port}  (user {user}, password {password})")

    client = Client(Settings.from_env(env), load_profiles(apis, env, with_secrets=False))
    sync = Sync.of(job_count)
    _say(f"syncing {sync.tracks} tracks and {sync.playlists} playlists ({sync.pages} pages), "
         f"then {len(sync.again)} of the tracks again (the cache answers those)")
    view = ProgressView(sync.total, stream=sys.stdout, every_s=2.0)
    try:
        first = client.submit_many(sync.first_jobs(), name="demo-sync").batch
        done = _follow(first, view, Counts(), procs, job_count)
        again = client.submit_many((_track(n, "again") for n in sync.again), name="demo-again").batch
        _follow(again, view, done, procs, job_count)
    finally:
        view.close()
    records = [*first.results(), *again.results()]
    out = Path.cwd() / RESULTS_FILE
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    for line in _summary(records, handler, time.monotonic() - began, out):
        _say(line)


def _track(n: int, label: str = "track") -> dict[str, Any]:
    return {"api": "demo", "path": f"/tracks/{n}", "key": f"{label}-{n}"}


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _follow(batch: Batch, view: ProgressView, before: Counts, procs: _Processes,
            job_count: int) -> Counts:
    """Wait for a batch, showing it on ``view`` after the ``before`` jobs already done."""

    def shown(now: Counts) -> None:
        procs.check()
        view.update(Counts(now.pending, now.retrying, before.succeeded + now.succeeded,
                           before.failed + now.failed, waiting=now.waiting))

    now = batch.wait(poll_s=0.2, timeout_s=120 + job_count, on_progress=shown)
    return Counts(0, 0, before.succeeded + now.succeeded, before.failed + now.failed)


def _summary(records: list[dict[str, Any]], api: DemoAPI, wall_s: float, out: Path) -> list[str]:
    failed = [r for r in records if not r.get("ok")]
    why = Counter(
        f"HTTP {r['error'].get('status_code')}"
        + (" until retries ran out" if "max retries" in r["error"].get("message", "") else "")
        for r in failed if isinstance(r.get("error"), dict))
    pages = [r for r in records if "page" in r]
    served = api.served
    return [
        f"done in {wall_s:.1f} s",
        f"  succeeded      {len(records) - len(failed):>6}",
        f"  failed         {len(failed):>6}  by design: "
        + (", ".join(f"{n} x {what}" for what, n in sorted(why.items())) or "none"),
        f"  retries        {sum(max((r.get('attempts') or 1) - 1, 0) for r in records):>6}"
        "  attempts after the first",
        f"  cache hits     {sum(1 for r in records if r.get('from_cache')):>6}"
        "  answered from the shared Redis cache",
        f"  pages          {len(pages):>6}  of {len({r.get('key') for r in pages})} paginated playlists",
        f"  tokens issued  {api.tokens_issued:>6}  for the whole fleet ({WORKERS} workers x "
        f"{CONCURRENCY} threads), each good for {TOKEN_LIFETIME_S} s",
        f"  429 over limit {api.over_limit:>6}  the API allows {RATE_PER_S}/s; the workers share "
        "one budget",
        f"  429 planned    {served[429] - api.over_limit:>6}  with Retry-After: 1, which pauses the"
        " whole fleet",
        f"  API served     {sum(served.values()):>6}  requests: "
        + ", ".join(f"{n} x {status}" for status, n in sorted(served.items())),
        f"results: {out}",
        "  one JSON result per line, kept after the private Redis is gone; for example:",
        f"  head -n 3 {out.name}",
        f"  jq -c '{{key, ok, status_code, attempts, from_cache, page}}' {out.name} | less",
        f"  jq -c 'select(.ok | not) | {{key, status_code, error: .error.message}}' {out.name}",
        f"  jq -c 'select(.page) | {{key, page, tracks: (.body.items | length)}}' {out.name}",
    ]


class _Processes:
    """The demo's child processes (`reqworker ...`), each in a process group of its own."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with open(self.log(name), "wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "producer.cli", *args], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, name: str, ready: Callable[[Path], bool], within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while not ready(self.log(name)):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {within_s:g} s; "
                                   f"see {self.log(name)}")
            time.sleep(0.1)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; "
                                   f"see {self.log(name)}")

    def stop(self) -> None:
        """SIGTERM each process group, SIGKILL what is left after ``STOP_GRACE_S``."""
        stop_groups(self.procs.values(), STOP_GRACE_S)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(line: str) -> None:
    print(line, flush=True)
