"""`reqworker demo`: the whole system on this machine, with nothing installed beforehand.

It starts a private redis-server, a local demo API and two worker processes, syncs a
catalogue of tracks through them with live progress, prints what happened, writes every
result to ./reqworker-demo-results.jsonl and stops everything it started, Ctrl-C included.
The demo API misbehaves on purpose, deterministically, so the summary is the same each run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from producer.client import Batch, Client, Counts
from producer.localredis import LocalRedis
from producer.loopback_api import Hit, LoopbackAPI, Reply
from producer.progress import ProgressView
from worker.profiles import load_profiles
from worker.settings import Settings

RESULTS_FILE = "reqworker-demo-results.jsonl"
WORKERS, CONCURRENCY = 2, 4
#: Seconds a worker gets to finish its jobs after SIGTERM before its group is killed.
STOP_GRACE_S = 10.0
ROOT = Path(__file__).resolve().parent.parent
TRACKS = "/v1/tracks/"
PROFILE = """\
[apis.demo]
base_url = "{url}/v1"
timeout = 5
cache_expire = "1h"
backoff = {{ start = 0.2, factor = 2, count = 4 }}
"""


def plan(n: int) -> list[int]:
    """What /v1/tracks/<n> answers, attempt after attempt (the last answer repeats)."""
    if n % 25 == 0:
        return [404]  # no such track: fails at once
    if n % 50 == 17:
        return [503]  # always down: fails when its 4 retries are spent
    if n % 50 == 9:
        return [429, 200]  # rate limited once, with Retry-After: 1
    if n % 10 == 3:
        return [500, 200]
    if n % 10 == 6:
        return [502, 503, 200]
    return [200]


class DemoAPI:
    """The demo API's handler: small JSON after a few ms, and trouble as ``plan`` says."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self.served: Counter[int] = Counter()

    def __call__(self, hit: Hit) -> Reply | None:
        number = hit.path.removeprefix(TRACKS)
        if not hit.path.startswith(TRACKS) or not number.isdigit():
            return None
        n = int(number)
        steps = plan(n)
        with self._lock:
            status = steps[min(self._attempts[hit.path], len(steps) - 1)]
            self._attempts[hit.path] += 1
            self.served[status] += 1
        delay = 0.002 + 0.002 * (n % 4)
        if status == 200:
            body = {"id": n, "title": f"Track {n}", "duration_ms": 150_000 + 977 * (n % 97)}
            return Reply(json=body, delay_s=delay)
        message = "no such track" if status == 404 else "please try again later"
        headers = {"Retry-After": "1"} if status == 429 else {}
        return Reply(status, json={"error": {"status": status, "message": message}},
                     headers=headers, delay_s=delay)


def run_demo(job_count: int) -> int:
    """Run the demo; 0 when it ran (some demo jobs fail by design), 1 if it broke, 130 on Ctrl-C."""
    stack = ExitStack()
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:  # SIGTERM stops the demo the way Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _run(job_count, stack)
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
            _say("stopped the workers, the demo API and the private Redis")
        finally:
            if on_main_thread:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous)


def _run(job_count: int, stack: ExitStack) -> None:
    if job_count < 10:
        raise ValueError("the demo needs at least 10 jobs")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="reqworker-demo-"))
    server = LocalRedis()
    stack.callback(server.stop)
    server.start()
    handler = DemoAPI()
    api = LoopbackAPI(fallback=handler).start()
    stack.callback(api.stop)
    apis = work / "apis.toml"
    apis.write_text(PROFILE.format(url=api.url), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQWORKER_", "CELERY_"))}
    env.update(REQWORKER_REDIS_URL=server.url, REQWORKER_APIS=str(apis),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    _say(f"private Redis    {server.url}")
    _say(f"demo API         {api.url}{TRACKS}<n>  (profile 'demo' in {apis})")

    workers = _Workers(work)
    stack.callback(workers.stop)
    workers.start(env)
    _say(f"worker logs      {work}/worker-{{1..{WORKERS}}}.log")
    workers.wait_ready()

    client = Client(Settings.from_env(env), load_profiles(apis, env, with_secrets=False))
    repeats = max(2, job_count // 10)
    first = job_count - repeats
    again = [n for n in range(1, first + 1) if plan(n) == [200]][:repeats]
    _say(f"syncing {first} tracks, then {len(again)} of them again (the cache answers those)")
    view = ProgressView(first + len(again), stream=sys.stdout, every_s=2.0)
    try:
        sync = client.submit_many((_job(n) for n in range(1, first + 1)), name="demo-sync").batch
        done = _follow(sync, view, Counts(), workers, job_count)
        repeat = client.submit_many((_job(n, "again") for n in again), name="demo-repeat").batch
        _follow(repeat, view, done, workers, job_count)
    finally:
        view.close()
    records = [*sync.results(), *repeat.results()]
    out = Path.cwd() / RESULTS_FILE
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    for line in _summary(records, handler, len(api.hits()), time.monotonic() - began, out):
        _say(line)


def _job(n: int, label: str = "track") -> dict[str, Any]:
    return {"api": "demo", "path": f"/tracks/{n}", "key": f"{label}-{n}"}


def _follow(batch: Batch, view: ProgressView, before: Counts, workers: _Workers,
            job_count: int) -> Counts:
    """Wait for a batch, showing it on ``view`` after the ``before`` jobs already done."""

    def shown(now: Counts) -> None:
        workers.check()
        view.update(Counts(now.pending, now.retrying, before.succeeded + now.succeeded,
                           before.failed + now.failed))

    now = batch.wait(poll_s=0.2, timeout_s=120 + job_count, on_progress=shown)
    return Counts(0, 0, before.succeeded + now.succeeded, before.failed + now.failed)


def _summary(records: list[dict[str, Any]], handler: DemoAPI, requests: int, wall_s: float,
             out: Path) -> list[str]:
    failed = [r for r in records if not r.get("ok")]
    why = Counter(
        f"HTTP {r['error'].get('status_code')}"
        + (" until retries ran out" if "max retries" in r["error"].get("message", "") else "")
        for r in failed if isinstance(r.get("error"), dict))
    served_5xx = sum(n for status, n in handler.served.items() if status >= 500)
    return [
        f"done in {wall_s:.1f} s",
        f"  succeeded   {len(records) - len(failed):>6}",
        f"  failed      {len(failed):>6}  by design: "
        + (", ".join(f"{n} x {what}" for what, n in sorted(why.items())) or "none"),
        f"  retries     {sum(max((r.get('attempts') or 1) - 1, 0) for r in records):>6}"
        "  (attempts after the first)",
        f"  cache hits  {sum(1 for r in records if r.get('from_cache')):>6}"
        "  (answered from the shared Redis cache)",
        f"  API served  {requests:>6}  requests, of them {handler.served[429]} x 429"
        f" (Retry-After: 1) and {served_5xx} x 5xx",
        f"results: {out}",
    ]


class _Workers:
    """The demo's worker processes, each in a process group of its own, logging to ``work``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def log(self, i: int) -> Path:
        return self.work / f"worker-{i}.log"

    def start(self, env: dict[str, str]) -> None:
        for i in range(1, WORKERS + 1):
            with open(self.log(i), "wb") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "producer.cli", "worker", "--concurrency",
                     str(CONCURRENCY), "--hostname", f"demo{i}@%h"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))

    def wait_ready(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while not all(" ready." in self.log(i).read_text(errors="replace")
                      for i in range(1, len(self.procs) + 1)):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not start within {within_s:g} s; "
                                   f"see their logs in {self.work}")
            time.sleep(0.1)

    def check(self) -> None:
        for i, proc in enumerate(self.procs, start=1):
            if proc.poll() is not None:
                raise RuntimeError(f"worker {i} exited with code {proc.returncode}; "
                                   f"see {self.log(i)}")

    def stop(self) -> None:
        """SIGTERM each worker's process group, SIGKILL what is left after ``STOP_GRACE_S``."""
        for proc in self.procs:
            if proc.returncode is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            _signal_group(proc, signal.SIGKILL)  # the worker, or anything it left in its group
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(line: str) -> None:
    print(line, flush=True)
