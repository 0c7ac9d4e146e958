"""Waiting jobs: a Retry-After storm and a rate-limited batch, reqworker against plain Celery.

    .venv/bin/python bench/waiting.py [--jobs 20000] [--storm 30] [--workers 2]
                                       [--concurrency 8] [--rate-jobs 300] [--rate 20] [--repeat 1]

Everything runs on this machine and stops with the script: a private redis-server, a
local API (``bench/echo_server.py``) and, one side at a time, ``--workers`` worker
processes (threads pool, ``--concurrency``).

1. **Storm.** The API answers 429 with ``Retry-After`` set to the seconds left of a
   ``--storm``-second storm (counted from its first request), then 200. ``--jobs`` GETs
   are enqueued at once.
   - reqworker: profile ``storm`` (defaults: backoff 0.5 x 1.5^n, 10 retries, so a
     Retry-After up to 85.5 s is honoured), jobs ``{"cache": false}`` through
     ``Client.submit_many``; ``reqworker worker`` as shipped.
   - baseline: ``bench.plain_app``, Celery's default settings (prefetch multiplier 4,
     early acks, visibility timeout 1 h, no events), a task that retries a 429 with
     ``countdown=Retry-After``; a ``send_task`` loop.
   Measured: peak RSS growth of the busiest worker over its RSS after a warm-up of
   4 x concurrency jobs per worker (so start-up allocations do not count), broker
   passes per job (task receptions in the worker logs / jobs), Redis commands per job
   (``INFO commandstats`` calls, all commands, before and after), and seconds from the
   storm's end to the last answered request.
2. **Rate-limited batch** (reqworker only): ``--rate-jobs`` GETs on a profile with
   ``rate_limit = "--rate/s"``, and the same on a profile without one; Redis commands and
   broker passes per job, limited against unlimited.

The results go to the ``waiting`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import running  # noqa: E402
from bench.running import PY, EchoServer, Fleet, Side  # noqa: E402

SECTION = "waiting"
REQWORKER = "reqworker"
BASELINE = "plain Celery (defaults, retry countdown=Retry-After)"


@dataclass
class Run:
    """What one side's run cost."""

    jobs: int
    passes: int
    commands: int
    rss_growth_mib: float
    after_storm_s: float
    wall_s: float

    @property
    def passes_per_job(self) -> float:
        return self.passes / self.jobs

    @property
    def commands_per_job(self) -> float:
        return self.commands / self.jobs


def storm_api(storm_s: float | None) -> EchoServer:
    """The echo server in a Retry-After storm of ``storm_s``; without one, a limit no run reaches,
    for the request log behind /_stats."""
    return EchoServer(*(["--storm", str(storm_s)] if storm_s else ["--limit", "1000000000"]))


def commands(r: Any) -> int:
    """Redis commands executed so far (``INFO commandstats``; scripts' own calls included)."""
    return sum(int(v["calls"]) for k, v in r.info("commandstats").items() if k.startswith("cmdstat_"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def passes(fleet: Fleet) -> int:
    return sum(log.read_text(errors="replace").count("] received") for log in fleet.logs)


def sides(args: Any) -> list[Side]:
    from bench.plain_app import TASK_NAME as PLAIN
    from worker.jobs import TASK_NAME

    common = ["--concurrency", str(args.concurrency), "--pool", "threads", "--loglevel", "INFO"]
    plain = [PY, "-m", "celery", "-A", "bench.plain_app", "worker", *common]
    reqworker = [PY, "-m", "producer.cli", "worker", *common]
    return [Side(REQWORKER, TASK_NAME, reqworker, lambda path: {"api": "storm", "path": path}),
            Side(BASELINE, PLAIN, plain, lambda url: {"url": url}, plain=True)]


def warm_up(side: Side, app: Any, calm: EchoServer, count: int) -> None:
    """Run ``count`` jobs against the calm API, so start-up allocations are not counted as growth."""
    from producer.client import Client

    tag = time.monotonic_ns()
    if side.name == REQWORKER:
        batch = Client.from_env().submit_many(
            [{"api": "unlimited", "path": f"/warm/{tag}/{i}"} for i in range(count)]).batch
        batch.wait(poll_s=0.1, timeout_s=300)
    else:
        for result in [app.send_task(side.task, kwargs={"url": f"{calm.url}/warm/{tag}/{i}"})
                       for i in range(count)]:
            result.get(timeout=300)


def run_side(side: Side, api: EchoServer, r: Any, env: dict[str, str], jobs: list[str], profile: str,
             logdir: Path, tag: str, args: Any, storm: bool, calm: EchoServer) -> Run:
    from celery import Celery

    from producer.client import Client

    r.flushdb()
    api.call("/_reset")
    fleet = Fleet()
    try:
        fleet.start(side, args.workers, env, logdir, tag)
        if side.name == REQWORKER:
            client = Client.from_env()
            app = client.app
        else:
            app = Celery("bench-plain", broker=env["BENCH_REDIS_URL"], backend=env["BENCH_REDIS_URL"])
        fleet.wait_ready(app)
        warm_up(side, app, calm, args.workers * args.concurrency * 4)
        api.call("/_reset")
        ready = [rss_mib(w.proc.pid) for w in fleet.workers]
        peak = list(ready)
        before, passes_before, t0 = commands(r), passes(fleet), time.perf_counter()
        if side.name == REQWORKER:
            client.submit_many([{"api": profile, "path": p, "cache": False} for p in jobs])
        else:
            running.enqueue(app, side, running.prepare(side, [api.url + p for p in jobs]))
        deadline = time.monotonic() + args.limit
        while True:
            fleet.alive()
            peak = [max(p, rss_mib(w.proc.pid)) for p, w in zip(peak, fleet.workers, strict=True)]
            stats = api.call("/_stats")
            if len(stats["ok"]) >= len(jobs):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{side.name}: {len(stats['ok'])} of {len(jobs)} answered after "
                                   f"{args.limit:g} s; see {logdir}")
            time.sleep(0.5)
        time.sleep(1.0)  # the last results are stored and acknowledged
        wall_s, used = time.perf_counter() - t0, commands(r) - before
    finally:
        fleet.stop()
    growth = max(p - q for p, q in zip(peak, ready, strict=True))
    after = max(stats["ok"]) - stats["ends"] if storm and stats.get("ends") else float("nan")
    return Run(len(jobs), passes(fleet) - passes_before, used, growth, after, wall_s)


def storm_table(runs: dict[str, list[Run]]) -> list[str]:
    lines = ["| side | peak worker RSS growth MiB | broker passes / job | Redis commands / job "
             "| s from storm end to last answer | wall s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, rs in runs.items():
        def med(f: Callable[[Run], float], rs: list[Run] = rs) -> float:
            return statistics.median(f(x) for x in rs)
        lines.append(f"| {name} | {med(lambda x: x.rss_growth_mib):.1f} "
                     f"| {med(lambda x: x.passes_per_job):.2f} "
                     f"| {med(lambda x: x.commands_per_job):.1f} | {med(lambda x: x.after_storm_s):.1f} "
                     f"| {med(lambda x: x.wall_s):.1f} |")
    return lines


def report(args: Any, storm: dict[str, list[Run]], paced: dict[str, list[Run]], header: str) -> str:
    limited = statistics.median(x.commands_per_job for x in paced["limited"])
    free = statistics.median(x.commands_per_job for x in paced["unlimited"])
    limited_passes = statistics.median(x.passes_per_job for x in paced["limited"])
    lines = [
        "## Waiting jobs: a Retry-After storm and a rate-limited batch\n",
        "Goals (issue 9): with 20,000 jobs in a Retry-After storm a worker's RSS grows by under 50 MiB; "
        "on a rate-limited batch each job passes through the broker at most 3 times and Redis commands "
        "per job stay within 2x those of an unlimited batch.\n",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, `.venv/bin/python bench/waiting.py --jobs "
        f"{args.jobs} --storm {args.storm:g} --workers {args.workers} --concurrency {args.concurrency} "
        f"--rate-jobs {args.rate_jobs} --rate {args.rate} --repeat {args.repeat}`\n",
        header,
        f"### Storm: {args.jobs} GETs, {args.storm:g} s of 429 + Retry-After, {args.workers} workers x "
        f"{args.concurrency} threads (median of {args.repeat})\n",
        "- reqworker: `reqworker worker --pool threads` as shipped (its `celeryconfig`: acks late, "
        "prefetch 1, events); profile defaults; bulk enqueue with `Client.submit_many`, one job a "
        "message (`REQWORKER_JOBS_PER_MESSAGE=1`, in both tables: waiting is what a job does alone, "
        "after it leaves a bundle, and broker passes are counted per message received)",
        "- baseline: `bench/plain_app.py`, Celery's defaults (prefetch multiplier 4, early ack, "
        "visibility timeout 1 h, no events), `self.retry(countdown=Retry-After)`; a `send_task` loop\n",
        *storm_table(storm),
        f"\n### Rate-limited batch (reqworker): {args.rate_jobs} GETs at `rate_limit = \"{args.rate}/s\"` "
        f"against the same without a limit\n",
        *storm_table(paced),
        f"\nRedis commands per job, limited / unlimited: **{limited / free:.2f}** (goal <= 2); broker "
        f"passes per limited job: **{limited_passes:.2f}** (goal <= 3).\n",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = running.arguments(__doc__)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--storm", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate-jobs", type=int, default=300)
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--limit", type=float, default=1800, help="seconds a run may take")
    args = parser.parse_args()
    with running.session() as bench:
        stormy, calm = storm_api(args.storm), storm_api(None)
        bench.stop_later(stormy.stop)
        bench.stop_later(calm.stop)
        stormy.wait_port()
        calm.wait_port()
        env = bench.configure(f'[apis.storm]\nbase_url = "{stormy.url}"\n\n'
                              f'[apis.limited]\nbase_url = "{calm.url}"\nrate_limit = "{args.rate}/s"\n\n'
                              f'[apis.unlimited]\nbase_url = "{calm.url}"\n',
                              # One job a message on both sides of each comparison: this bench
                              # measures what waiting costs a job, and a bundled job waits
                              # alone (it leaves its bundle); its "received" lines count passes.
                              REQWORKER_JOBS_PER_MESSAGE="1")
        import redis

        r = redis.Redis.from_url(bench.redis_url)
        header = running.machine()
        order = sides(args)
        storm: dict[str, list[Run]] = {s.name: [] for s in order}
        paced: dict[str, list[Run]] = {"limited": [], "unlimited": []}
        logdir = bench.tmp
        for n, k, side in running.alternating(order, args.repeat):
            jobs = [f"/storm/{n}/{k}/{i}" for i in range(args.jobs)]
            res = run_side(side, stormy, r, env, jobs, "storm", logdir, f"s{n}-{k}", args, True, calm)
            storm[side.name].append(res)
            print(f"storm {n + 1}/{args.repeat} {side.name[:30]:<30} RSS +{res.rss_growth_mib:.1f} MiB, "
                  f"{res.passes_per_job:.2f} passes/job, {res.commands_per_job:.1f} commands/job, "
                  f"{res.after_storm_s:.1f} s after the storm", flush=True)
            if k < len(order) - 1:
                continue
            for profile in ("limited", "unlimited"):
                jobs = [f"/{profile}/{n}/{i}" for i in range(args.rate_jobs)]
                res = run_side(order[0], calm, r, env, jobs, profile, logdir, f"p{n}-{profile}", args,
                               False, calm)
                paced[profile].append(res)
                print(f"paced {n + 1}/{args.repeat} {profile:<10} {res.passes_per_job:.2f} passes/job, "
                      f"{res.commands_per_job:.1f} commands/job", flush=True)
        return running.publish(SECTION, report(args, storm, paced, header), args.out)


if __name__ == "__main__":
    running.run(main)
