"""A slow API: jobs against an API that takes 100 ms per answer, reqworker against the plain
Celery setups a user would reach for (threads with high concurrency, gevent), and the
seed's sequential handler.

    .venv/bin/python bench/slowapi.py [--jobs 2000] [--delay 0.1] [--workers 2] [--threads 64]
                                       [--greenlets 200] [--repeat 1] [--sides NAME,...]

Everything runs on this machine and stops with the script: a private redis-server, the
slow API (``bench/echo_server.py --delay 0.1``: every answer waits 0.1 s, answers on
different connections wait at the same time) and, one side at a time, ``--workers``
worker processes.

- reqworker: ``reqworker worker`` as shipped, with ``--pool threads --concurrency
  --threads`` (it offers no gevent pool); jobs as a user
  writes them (``{"api": "slow", "path": ...}``, cache on: every GET a miss), enqueued
  with ``Client.submit_many`` as one batch.
- plain Celery: ``bench/baseline_app.py`` (Celery's default settings) plus ``-E`` (events,
  as Flower needs), a task that calls ``requests.get``; ``-P threads -c --threads`` and
  ``-P gevent -c --greenlets``; a ``send_task`` loop.
- the seed: musify's ``RequestHandler`` is sequential, one request at a time, so its
  speed is 1 / delay (10 jobs/s at 100 ms); not run.

A run is timed from the first enqueue to the last stored result (MGET poll of the
result keys every 0.05 s). The results go to the ``slowapi`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import running  # noqa: E402
from bench.running import PY, EchoServer, Fleet, Side  # noqa: E402

#: This script's section of RESULTS.md.
SECTION = "slowapi"
#: reqworker's jobs/s must reach this many times the seed's sequential speed...
GOAL_SEED = 30.0
#: ...and this many times the best plain Celery side.
GOAL_PLAIN = 1.5
PROFILE = "slow"


def all_sides(args: Any) -> list[Side]:
    from bench.baseline_app import TASK_NAME
    from worker.jobs import TASK_NAME as REQUEST

    def pool(name: str, size: int) -> list[str]:
        return ["--pool", name, "--concurrency", str(size), "--loglevel", "INFO"]

    plain = [PY, "-m", "celery", "-A", "bench.baseline_app", "worker", "-E"]
    reqworker = [PY, "-m", "producer.cli", "worker"]
    return [
        Side(f"reqworker threads x {args.threads}", REQUEST, [*reqworker, *pool("threads", args.threads)],
             lambda path: {"api": PROFILE, "path": path}),
        Side(f"plain Celery threads x {args.threads}", TASK_NAME, [*plain, *pool("threads", args.threads)],
             lambda url: {"url": url}, plain=True),
        Side(f"plain Celery gevent x {args.greenlets}", TASK_NAME, [*plain, *pool("gevent", args.greenlets)],
             lambda url: {"url": url}, plain=True),
    ]


def run_side(side: Side, api: EchoServer, r: Any, env: dict[str, str], args: Any, tag: str,
             logdir: Path) -> dict[str, float]:
    from producer.client import Client

    r.flushdb()
    fleet = Fleet()
    try:
        fleet.start(side, args.workers, env, logdir, tag)
        app = running.plain_app() if side.plain else Client.from_env().app
        fleet.wait_ready(app)
        paths = [f"/item/{tag}/{i}" for i in range(args.jobs)]
        warm = [f"/warm/{tag}/{i}" for i in range(args.workers * 8)]
        if side.plain:
            warm_ids = running.enqueue(app, side, running.prepare(side, [api.url + p for p in warm]))
            running.wait_done(r, warm_ids, fleet, 0.05)
            cpu0, t0 = cpu(fleet), time.perf_counter()
            ids = running.enqueue(app, side, running.prepare(side, [api.url + p for p in paths]))
            failed = running.wait_done(r, ids, fleet, 0.05)
        else:
            client = Client.from_env()
            client.submit_many([side.kwargs(p) for p in warm]).batch.wait(poll_s=0.05, timeout_s=300)
            cpu0, t0 = cpu(fleet), time.perf_counter()
            counts = client.submit_many([side.kwargs(p) for p in paths]).batch.wait(poll_s=0.05,
                                                                                   timeout_s=900)
            failed = counts.failed
        wall_s, cpu_s = time.perf_counter() - t0, cpu(fleet) - cpu0
    finally:
        fleet.stop()
    if failed:
        raise RuntimeError(f"{side.name}: {failed} of {args.jobs} jobs failed; see {logdir}")
    return {"jobs_s": args.jobs / wall_s, "wall_s": wall_s, "cpu_ms_job": 1000 * cpu_s / args.jobs}


def cpu(fleet: Fleet) -> float:
    """CPU seconds the fleet's worker processes have used so far."""
    return sum(worker.cpu_s() for worker in fleet.workers)


def report(args: Any, runs: dict[str, list[dict[str, float]]], header: str) -> str:
    seed = 1 / args.delay
    rate = {name: statistics.median(x["jobs_s"] for x in rs) for name, rs in runs.items()}
    plain = {name: v for name, v in rate.items() if name.startswith("plain")}
    best_plain = max(plain.values()) if plain else float("nan")
    best_name = max(plain, key=plain.__getitem__) if plain else "-"
    lines = [
        f"## A slow API: {args.jobs:,} jobs, {args.delay * 1000:.0f} ms per answer, {args.workers} workers\n",
        f"Goal: reqworker at >= {GOAL_SEED:g}x the seed's sequential handler ({seed:.0f} jobs/s) and >= "
        f"{GOAL_PLAIN:g}x the best plain Celery setup (threads with high concurrency, or gevent).\n",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, `.venv/bin/python bench/slowapi.py --jobs "
        f"{args.jobs} --delay {args.delay:g} --workers {args.workers} --threads {args.threads} "
        f"--greenlets {args.greenlets} --repeat {args.repeat}`\n",
        header,
        f"- API: `bench/echo_server.py --delay {args.delay:g}` (asyncio; every answer waits, concurrently)",
        "- reqworker: `reqworker worker --pool P --concurrency N` as shipped (acks late, prefetch 1, events, "
        "its Redis transport); jobs `{\"api\": ..., \"path\": ...}` (cache on, every GET a miss) through "
        "`Client.submit_many`",
        "- plain Celery: `bench/baseline_app.py`, Celery's default settings (early ack, prefetch "
        "multiplier 4) plus `-E` (events, as Flower needs), `requests.get(url)`; a `send_task` loop",
        f"- seed: the sequential handler, one request at a time: 1 / {args.delay:g} s = {seed:.0f} jobs/s "
        "(computed, not run)",
        "- wall time from the first enqueue to the last stored result; median of the repeats\n",
        "| side | jobs/s (median) | runs jobs/s | worker CPU ms/job | x seed | x best plain |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
        f"| seed (sequential) | {seed:.0f} | | | 1.0 | {seed / best_plain:.2f} |",
    ]
    for name, rs in runs.items():
        each = ", ".join(f"{x['jobs_s']:.0f}" for x in rs)
        cpu_ms = statistics.median(x["cpu_ms_job"] for x in rs)
        lines.append(f"| {name} | {rate[name]:.0f} | {each} | {cpu_ms:.2f} | {rate[name] / seed:.1f} "
                     f"| {rate[name] / best_plain:.2f} |")
    ours = {name: v for name, v in rate.items() if name.startswith("reqworker")}
    if ours:
        best = max(ours, key=ours.__getitem__)
        met = ours[best] / seed >= GOAL_SEED and ours[best] / best_plain >= GOAL_PLAIN
        lines.append(f"\n**{best}: {ours[best]:.0f} jobs/s, {ours[best] / seed:.1f}x the seed, "
                     f"{ours[best] / best_plain:.2f}x the best plain setup ({best_name})**: goal "
                     f"{'met' if met else 'NOT met'}.\n")
    return "\n".join(lines)


def main() -> int:
    parser = running.arguments(__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the API takes per answer")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64, help="concurrency of the threads pools")
    parser.add_argument("--greenlets", type=int, default=200, help="concurrency of the gevent pools")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sides", default="", help="comma-separated name prefixes of the sides to run")
    args = parser.parse_args()
    with running.session() as bench:
        api = EchoServer("--delay", str(args.delay))
        bench.stop_later(api.stop)
        api.wait_port()
        env = bench.configure(f'[apis.{PROFILE}]\nbase_url = "{api.url}"\n')
        import redis

        r = redis.Redis.from_url(bench.redis_url)
        header = running.machine()
        wanted = [w.strip() for w in args.sides.split(",") if w.strip()]
        order = [s for s in all_sides(args) if not wanted or s.name.startswith(tuple(wanted))]
        runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in order}
        for n, k, side in running.alternating(order, args.repeat):
            res = run_side(side, api, r, env, args, f"run{n}-{k}", bench.tmp)
            runs[side.name].append(res)
            print(f"run {n + 1}/{args.repeat} {side.name:<32} {res['jobs_s']:7.0f} jobs/s "
                  f"(wall {res['wall_s']:.2f} s, worker CPU {res['cpu_ms_job']:.2f} ms/job)", flush=True)
        return running.publish(SECTION, report(args, runs, header), args.out)


if __name__ == "__main__":
    running.run(main)
