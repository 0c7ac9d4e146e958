"""Rate limits: jobs against an API that allows 50 requests/s, through reqworker's fleet-wide
limiter and through Celery's own ``rate_limit="50/s"`` on a plain task, in one run.

    .venv/bin/python bench/ratelimit.py [--jobs 1000] [--rate 50] [--workers 4] [--concurrency 4]
                                         [--burst 1] [--repeat 1]

Everything runs on this machine and stops with the script: a private redis-server, the
rate-limited API (``bench/echo_server.py --limit 50``: a sliding 1-s window of answered
requests, 429 with ``Retry-After: 1`` beyond it) and, one side at a time, ``--workers``
worker processes with the same options (threads pool, ``--concurrency``, the project's
``celeryconfig``).

- reqworker: a profile with ``rate_limit = "50/s"`` and ``rate_burst = --burst``; jobs
  ``{"api": ..., "path": ..., "cache": false}`` (so every job is a request) enqueued with
  ``producer.client.Client.submit_many``; workers started as ``python -m producer.cli worker``.
- baseline: ``bench.baseline_app.get_limited``, a task with Celery's ``rate_limit="50/s"``
  that calls ``requests.get`` and retries a 429 with the Retry-After as countdown;
  enqueued with a ``send_task`` loop (``bench.running.enqueue``).

The API logs when each request arrived. Achieved rate = answered (200) requests / time
from the first to the last request it saw, 429s included. The results go to the
``ratelimit`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import running  # noqa: E402
from bench.running import PY, EchoServer, Fleet, Side  # noqa: E402
from worker.profiles import Profile  # noqa: E402

#: This script's section of RESULTS.md.
SECTION = "ratelimit"
#: Achieved rate / allowed rate must reach this.
GOAL = 0.95
#: The share of the rate reqworker holds back by default (``Profile.rate_margin``).
MARGIN = cast(float, Profile.__dataclass_fields__["rate_margin"].default)
#: The profile the reqworker side's jobs name.
PROFILE = "limited"
REQWORKER = "reqworker"
BASELINE = "baseline (Celery rate_limit)"


@dataclass
class Outcome:
    """One side's run: what the API saw and what the jobs say."""

    wall_s: float
    failed: int
    ok: list[float]
    refused: list[float]
    attempts: Counter[int] = field(default_factory=Counter)
    #: reqworker only: times a job went back to the queue to wait (for the budget or a pause).
    requeued: int | None = None

    @property
    def span_s(self) -> float:
        times = self.ok + self.refused
        return max(times) - min(times) if len(times) > 1 else float("nan")

    @property
    def achieved(self) -> float:
        return len(self.ok) / self.span_s

    @property
    def gaps(self) -> list[float]:
        """Seconds between consecutive requests at the API."""
        times = sorted(self.ok + self.refused)
        return [b - a for a, b in itertools.pairwise(times)] or [float("nan")]

    @property
    def peak(self) -> int:
        """Most requests sent (answered or refused) in any sliding 1-s window."""
        times, most, lo = sorted(self.ok + self.refused), 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - 1.0:
                lo += 1
            most = max(most, hi - lo + 1)
        return most


def sides(args: Any) -> list[Side]:
    from bench.baseline_app import LIMITED_TASK_NAME
    from worker.jobs import TASK_NAME

    common = ["--concurrency", str(args.concurrency), "--pool", "threads", "--loglevel", args.loglevel]
    # Celery's defaults, plus events (Flower): bench/baseline_app.py.
    celery = [PY, "-m", "celery", "-A", "bench.baseline_app", "worker", *common, "-E"]
    reqworker = [PY, "-m", "producer.cli", "worker", *common]  # execs the same celery command line

    def job(path: str) -> dict[str, Any]:
        return {"api": PROFILE, "path": path, "cache": False}

    return [Side(REQWORKER, TASK_NAME, reqworker, job),
            Side(BASELINE, LIMITED_TASK_NAME, celery, lambda url: {"url": url}, plain=True)]


def one_run(app: Any, r: Any, api: EchoServer, side: Side, env: dict[str, str], args: Any, tag: str,
            logdir: Path) -> Outcome:
    from producer.client import Client

    if side.plain:
        app = running.plain_app()
    # Celery's per-process rate_limit crawls once 429s start: give it room to finish.
    limit_s = max(600.0, 30 * args.jobs / args.rate)
    r.flushdb()  # before the workers declare their queue: every run starts from an empty Redis
    fleet = Fleet()
    try:
        fleet.start(side, args.workers, env, logdir, tag)
        fleet.wait_ready(app)
        api.call("/_reset")
        paths = [f"/item/{tag}/{i}" for i in range(args.jobs)]
        if side.name == REQWORKER:
            client = Client.from_env()
            jobs = [side.kwargs(p) for p in paths]
            t0 = time.perf_counter()
            report = client.submit_many(jobs, name=f"ratelimit bench {tag}")
            report.batch.wait(poll_s=0.05, timeout_s=limit_s, on_progress=lambda _: fleet.alive())
            wall_s = time.perf_counter() - t0
            records = list(report.batch.results())
            failed = sum(not rec["ok"] for rec in records) + args.jobs - len(records)
            attempts = Counter(int(rec["attempts"]) for rec in records)
        else:
            messages = running.prepare(side, [api.url + p for p in paths])
            t0 = time.perf_counter()
            ids = running.enqueue(app, side, messages)
            failed = running.wait_done(r, ids, fleet, 0.05, limit_s)
            wall_s = time.perf_counter() - t0
            metas = [json.loads(raw) for raw in r.mget([f"celery-task-meta-{i}" for i in ids]) if raw]
            attempts = Counter(int(m["result"]["attempts"]) for m in metas if m["status"] == "SUCCESS")
        stats = api.call("/_stats")
        (logdir / f"{tag}-api.json").write_text(json.dumps(stats), encoding="utf-8")
    finally:
        fleet.stop()
    requeued = fleet.requeued() if side.name == REQWORKER else None
    return Outcome(wall_s, failed, stats["ok"], stats["refused"], attempts, requeued)


def attempts_text(attempts: Counter[int]) -> str:
    return ", ".join(f"{n} x {k}" for k, n in sorted(attempts.items()))


def report(args: Any, runs: dict[str, list[Outcome]], header: str) -> str:
    lines = [
        f"## Rate limit: {args.jobs:,} jobs against an API allowing {args.rate} req/s\n",
        f"Goal: {args.jobs:,} jobs against an API allowing {args.rate} req/s with {args.workers} worker "
        f"processes: reqworker versus Celery's own `rate_limit=\"{args.rate}/s\"` on a plain task, in one "
        f"run; achieved rate / allowed rate >= {GOAL} and no 429s.\n",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, `.venv/bin/python bench/ratelimit.py "
        f"--jobs {args.jobs} --rate {args.rate} --workers {args.workers} --concurrency {args.concurrency} "
        f"--burst {args.burst} --repeat {args.repeat}`\n",
        header,
        f"- API: `bench/echo_server.py --limit {args.rate} --window 1` in its own process: at most "
        f"{args.rate} answered requests in any sliding 1-s window (refused ones do not count), 429 with "
        "`Retry-After: 1` beyond; it logs each request's arrival time",
        f"- {args.workers} worker processes per side, each `--pool threads --concurrency {args.concurrency} "
        f"--loglevel {args.loglevel} -E` and its own `--hostname`; all of them answer a ping before the "
        "jobs are enqueued",
        f"- reqworker: profile `rate_limit = \"{args.rate}/s\"`, `rate_burst = {args.burst}`, default "
        f"`rate_margin = {MARGIN:g}` (GCRA in Redis for the whole fleet: one request every "
        f"{1000 / (args.rate * (1 - MARGIN)):.1f} ms, {args.burst} at once at most); "
        "jobs `{\"api\": ..., \"path\": ..., \"cache\": false}` through `Client.submit_many`; "
        "`python -m producer.cli worker` as shipped (its `celeryconfig`: acks late, prefetch 1, events)",
        f"- baseline: `bench.baseline_app.get_limited` (Celery's default settings plus `-E`), "
        f"`rate_limit=\"{args.rate}/s\"` (Celery's token "
        "bucket, capacity 1, kept by each worker process on its own), `requests.get`, a 429 retried "
        "with `self.retry(countdown=Retry-After)` (up to 100 times); enqueued by a `send_task` loop",
        "- achieved rate = requests answered 200 / (last - first request at the API, 429s included); "
        f"gap = time between consecutive requests at the API (ideal {1000 / args.rate:g} ms); "
        "wall = first enqueue to last result stored",
    ]
    if args.repeat > 1:
        lines.append(f"- {args.repeat} runs per side, sides alternating; one row per run")
    lines += [
        "",
        "| side | achieved req/s | achieved / allowed | 429s | requests | most sent in 1 s | median gap ms "
        "| longest gap s | wall s | jobs failed | attempts per job |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, outcomes in runs.items():
        for o in outcomes:
            lines.append(
                f"| {name} | {o.achieved:.1f} | {o.achieved / args.rate:.3f} | {len(o.refused)} | "
                f"{len(o.ok) + len(o.refused)} | {o.peak} | {1000 * statistics.median(o.gaps):.1f} | "
                f"{max(o.gaps):.2f} | {o.wall_s:.1f} | {o.failed} | "
                f"{attempts_text(o.attempts)} |")
    lines.append("")
    for name, outcomes in runs.items():
        for o in outcomes:
            ratio, refused = o.achieved / args.rate, len(o.refused)
            ones = set(o.attempts) == {1} and o.attempts[1] == args.jobs
            verdict = "met" if ratio >= GOAL and refused == 0 and not o.failed else "NOT met"
            extra = ""
            if name == REQWORKER:
                extra = (f"; every result has attempts == 1: {'yes' if ones else 'no'}; "
                         f"{o.requeued} times a job went back to the queue to wait")
            lines.append(f"- **{name}**: achieved/allowed **{ratio:.3f}** (goal >= {GOAL}), "
                         f"**{refused}** 429s (goal 0), {o.failed} jobs failed{extra}: goal {verdict}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = running.arguments(__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=50, help="requests/s the API allows (and both sides ask)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes per side")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker process")
    parser.add_argument("--burst", type=int, default=1, help="reqworker's rate_burst")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--loglevel", default="INFO", help="worker log level (INFO is reqworker's default)")
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the worker logs and the API's request logs here (default: not kept)")
    args = parser.parse_args()
    with running.session() as bench:
        logdir = args.logs or bench.tmp
        logdir.mkdir(parents=True, exist_ok=True)
        api = EchoServer("--limit", str(args.rate), "--window", "1")
        bench.stop_later(api.stop)
        api.wait_port()
        env = bench.configure(f'[apis.{PROFILE}]\nbase_url = "{api.url}"\nrate_limit = "{args.rate}/s"\n'
                              f"rate_burst = {args.burst}\ntimeout = 10\n",
                              BENCH_RATE_LIMIT=f"{args.rate}/s")
        import redis

        from producer.celeryapp import make_app

        app, r = make_app(), redis.Redis.from_url(bench.redis_url)
        header = running.machine()
        order = sides(args)
        runs: dict[str, list[Outcome]] = {s.name: [] for s in order}
        for n, k, side in running.alternating(order, args.repeat):
            tag = f"run{n}-{k}"
            o = one_run(app, r, api, side, env, args, tag, logdir)
            runs[side.name].append(o)
            print(f"run {n + 1}/{args.repeat} {side.name:<28} {o.achieved:6.1f} req/s "
                  f"({o.achieved / args.rate:.3f} of allowed), {len(o.refused)} 429s, "
                  f"wall {o.wall_s:.1f} s, failed {o.failed}, attempts {attempts_text(o.attempts)}",
                  flush=True)
        return running.publish(SECTION, report(args, runs, header), args.out)


if __name__ == "__main__":
    running.run(main)
