"""Throughput of reqworker against plain Celery tasks: ``requests.get``, and requests-cache.

    .venv/bin/python bench/throughput.py [--jobs 2000] [--concurrency 8] [--repeat 3]

Everything runs on this machine and stops with the script: a private redis-server, a
fast local API (bench/echo_server.py) and, one side at a time, a real worker with the
same options (threads pool, same concurrency, events). reqworker runs as shipped; the
baselines (``bench/baseline_app.py``) have Celery's default settings: a task that only
calls ``requests.get``, and one that uses requests-cache's own ``CachedSession`` on the
same Redis. Each job GETs a URL of its own, so the GET cache never hits. The cache-on
side then runs the same jobs again (cache hits: API calls counted) and a few paginated
jobs; Redis commands per job come from ``INFO commandstats``. A run is timed from the first
enqueue to the moment the last result is stored (seen by polling the result keys with
MGET). Sides alternate and repeat; the medians and ratios go to the ``throughput``
section of bench/RESULTS.md (see bench/results.py).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import running  # noqa: E402
from bench.running import PY, EchoServer, Side, Worker  # noqa: E402

GOAL = 0.9
#: A cache miss against requests-cache's own CachedSession task must reach this.
GOAL_CACHED = 1.0
#: A cached re-run must be at least this many times as fast as the uncached run.
GOAL_RERUN = 2.0
#: Redis commands of one uncached GET at most.
GOAL_COMMANDS = 12
#: Pages of each paginated job in the commands count.
PAGES = 5
BASELINE = "baseline requests.get"
CACHED_BASELINE = "baseline CachedSession"
CACHE_ON = "reqworker (cache on, misses)"
CACHE_OFF = "reqworker (cache false)"
#: This script's section of RESULTS.md (the hand-written notes after it are kept).
SECTION = "throughput"


def sides(concurrency: int, loglevel: str) -> list[Side]:
    from bench.baseline_app import CACHED_TASK_NAME, TASK_NAME
    from worker.jobs import Job  # the message the producer's Client sends, all fields present

    common = ["--concurrency", str(concurrency), "--pool", "threads", "--loglevel", loglevel]
    # Celery's defaults, plus events: reqworker always sends them, for Flower.
    celery = [PY, "-m", "celery", "-A", "bench.baseline_app", "worker", *common, "-E"]
    reqworker = [PY, "-m", "producer.cli", "worker", *common]  # execs the same celery command line

    def job(cache: bool) -> Callable[[str], dict[str, Any]]:
        return lambda url: {"job": Job(api="bench", url=url, cache=cache).to_message(), "batch_id": None}

    return [
        Side(BASELINE, TASK_NAME, celery, lambda url: {"url": url}, plain=True),
        Side(CACHED_BASELINE, CACHED_TASK_NAME, celery, lambda url: {"url": url}, plain=True),
        Side(CACHE_ON, "reqworker.request", reqworker, job(True)),
        Side(CACHE_OFF, "reqworker.request", reqworker, job(False)),
    ]


def commands(r: Any) -> int:
    """Redis commands run so far, the bench's own (MGET polls, INFO) left out."""
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items()
               if k.startswith("cmdstat_") and k not in ("cmdstat_mget", "cmdstat_info"))


def api_calls(api: str) -> int:
    """Requests the bench's API has answered since its last reset (``/_stats``)."""
    import requests

    return len(requests.get(f"{api}/_stats", timeout=30).json()["ok"])


def timed(app: Any, r: Any, side: Side, worker: Worker, urls: list[str], poll_s: float) -> dict[str, float]:
    """Enqueue one job per URL and wait for every result: jobs/s, CPU and Redis commands per job."""
    messages = running.prepare(side, urls)
    cpu0, before, t0 = worker.cpu_s(), commands(r), time.perf_counter()
    ids = running.enqueue(app, side, messages)
    enqueued_s = time.perf_counter() - t0
    failed = running.wait_done(r, ids, worker, poll_s)
    wall_s, cpu_s = time.perf_counter() - t0, worker.cpu_s() - cpu0
    if failed:
        raise RuntimeError(f"{side.name}: {failed} of {len(urls)} jobs failed; see {worker.log}")
    # Commands per job include enqueueing it (one push) and storing its result.
    return {"jobs_s": len(urls) / wall_s, "wall_s": wall_s, "enqueue_s": enqueued_s,
            "cpu_ms_job": 1000 * cpu_s / len(urls), "commands_job": (commands(r) - before) / len(urls)}


def paged(app: Any, r: Any, side: Side, worker: Worker, api: str, tag: str, jobs: int) -> float:
    """Redis commands per page of ``jobs`` paginated jobs of ``PAGES`` pages each."""
    from worker.jobs import Job

    first = [f"{api}/pages/{tag}-{i}/0/{PAGES}" for i in range(jobs)]
    messages = [(str(uuid.uuid4()), {"job": Job(api="bench", url=u, paginate={"next": "$.next"}).to_message(),
                                     "batch_id": None}) for u in first]
    calls0, before = api_calls(api), commands(r)
    running.enqueue(app, side, messages)
    deadline = time.monotonic() + 300
    while api_calls(api) - calls0 < jobs * PAGES:
        worker.alive()
        if time.monotonic() > deadline:
            raise RuntimeError("paginated jobs unfinished after 300 s")
        time.sleep(0.1)
    time.sleep(0.5)  # the last pages' results are stored
    return (commands(r) - before) / (jobs * PAGES)


def one_run(apps: dict[bool, Any], r: Any, side: Side, env: dict[str, str], api: str, args: Any, tag: str,
            logdir: Path) -> dict[str, float]:
    """One side: warm up, then the timed run; the cache-on side also re-runs it cached and pages."""
    app = apps[side.plain]
    r.flushdb()  # before the worker declares its queue: every run starts from an empty Redis
    worker = Worker(side, env, logdir / f"{tag}.log")
    try:
        while not app.control.ping(timeout=0.5):
            worker.alive()
        warm = [f"{api}/warm/{tag}/{i}" for i in range(args.concurrency * 4)]
        running.wait_done(r, running.enqueue(app, side, running.prepare(side, warm)), worker, 0.05)
        urls = [f"{api}/item/{tag}/{i}" for i in range(args.jobs)]
        result = timed(app, r, side, worker, urls, args.poll)
        if side.name == CACHE_ON:
            calls = api_calls(api)
            again = timed(app, r, side, worker, urls, args.poll)
            result.update(rerun_jobs_s=again["jobs_s"], rerun_api_calls=api_calls(api) - calls,
                          rerun_commands_job=again["commands_job"], rerun_cpu_ms_job=again["cpu_ms_job"])
            result["paged_commands_page"] = paged(app, r, side, worker, api, tag, max(1, args.jobs // 20))
    finally:
        worker.stop()
    return result


def report(args: Any, runs: dict[str, list[dict[str, float]]], header: str) -> str:
    def med(name: str, field: str) -> float:
        return statistics.median(x[field] for x in runs[name])

    base, cached = med(BASELINE, "jobs_s"), med(CACHED_BASELINE, "jobs_s")
    lines = [
        "## Throughput of uncached GETs, cache misses and a cached re-run\n",
        f"Goals: with the cache on and every GET a miss, >= {GOAL} of a plain Celery task that only calls "
        f"`requests.get`, and >= {GOAL_CACHED} of a plain Celery task using requests-cache's own "
        f"`CachedSession` on the same Redis; a cached re-run makes 0 API calls at >= {GOAL_RERUN:g}x the "
        f"uncached speed; an uncached GET costs <= {GOAL_COMMANDS} Redis commands.\n",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, `.venv/bin/python bench/throughput.py "
        f"--jobs {args.jobs} --concurrency {args.concurrency} --repeat {args.repeat}`\n",
        header,
        f"- {args.jobs} jobs per run, each a distinct URL (the cache never hits); {args.concurrency * 4} "
        f"warm-up jobs first; one worker `--pool threads --concurrency {args.concurrency} "
        f"--loglevel {args.loglevel} -E` per side",
        "- reqworker: `reqworker worker` as shipped (its `celeryconfig`: acks late, prefetch 1, JSON, "
        "events, its Redis transport); jobs `{\"api\": \"bench\", \"url\": ..., \"batch_id\": null}`",
        "- baselines: `bench/baseline_app.py`, Celery's default settings (early ack, prefetch multiplier 4, "
        "JSON) plus `-E` (events, as Flower needs); `requests.get(url)`, or a module-level "
        "`CachedSession(backend=\"redis\")` (requests-cache's defaults) on the same Redis",
        f"- wall time from the first enqueue to the last stored result (MGET poll every {args.poll:g} s); "
        "sides alternate; median of the repeats",
        "- enqueue: a `send_task` loop for the baselines (it also subscribes to each result's channel, "
        "2 commands per job), reqworker's bulk publisher (`reqworker enqueue`'s) for reqworker",
        "- Redis commands per job: `INFO commandstats` calls before and after, all commands (the enqueue, "
        "the worker's, the result) except the bench's own MGET polls and INFO",
        "- API: bench/echo_server.py (asyncio, keep-alive, TCP_NODELAY) in its own process\n",
        "| side | jobs/s (median) | runs jobs/s | worker CPU ms/job | Redis commands/job | enqueue s "
        "| ratio to requests.get | ratio to CachedSession |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rs in runs.items():
        jobs_s = med(name, "jobs_s")
        each = ", ".join(f"{x['jobs_s']:.0f}" for x in rs)
        lines.append(f"| {name} | {jobs_s:.0f} | {each} | {med(name, 'cpu_ms_job'):.2f} "
                     f"| {med(name, 'commands_job'):.1f} | {med(name, 'enqueue_s'):.2f} "
                     f"| {jobs_s / base:.2f} | {jobs_s / cached:.2f} |")
    miss = med(CACHE_ON, "jobs_s")
    rerun, rerun_calls = med(CACHE_ON, "rerun_jobs_s"), max(x["rerun_api_calls"] for x in runs[CACHE_ON])
    uncached_cmds = med(CACHE_OFF, "commands_job")
    lines += [
        f"| reqworker, the same jobs again (cache hits) | {rerun:.0f} | "
        + ", ".join(f"{x['rerun_jobs_s']:.0f}" for x in runs[CACHE_ON])
        + f" | {med(CACHE_ON, 'rerun_cpu_ms_job'):.2f} | {med(CACHE_ON, 'rerun_commands_job'):.1f} | "
        f"| {rerun / base:.2f} | {rerun / cached:.2f} |",
        "",
        f"- **Cache misses: {miss / base:.2f}** of the `requests.get` task (goal >= {GOAL}), "
        f"**{miss / cached:.2f}** of the `CachedSession` task (goal >= {GOAL_CACHED}); `cache: false`: "
        f"{med(CACHE_OFF, 'jobs_s') / base:.2f}.",
        f"- **Cached re-run:** {rerun_calls} API calls (goal 0), **{rerun / miss:.2f}x** the uncached "
        f"run (goal >= {GOAL_RERUN:g}x).",
        f"- **Redis commands per job:** uncached GET ({CACHE_OFF}) **{uncached_cmds:.1f}** (goal <= "
        f"{GOAL_COMMANDS}), cache miss {med(CACHE_ON, 'commands_job'):.1f}, cache hit "
        f"{med(CACHE_ON, 'rerun_commands_job'):.1f}, a page of a paginated job ({PAGES} pages a job, "
        f"cache on) {med(CACHE_ON, 'paged_commands_page'):.1f}.\n",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = running.arguments(__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loglevel", default="INFO", help="worker log level (INFO is reqworker's default)")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between result polls")
    args = parser.parse_args()
    with running.session() as bench:
        # A limit no run reaches: the server then logs requests, for the re-run's API calls.
        server = EchoServer("--limit", "1000000000")
        bench.stop_later(server.stop)
        api = server.wait_port().url
        env = bench.configure(f'[apis.bench]\nbase_url = "{api}"\ntimeout = 30\n')
        import redis

        from producer.celeryapp import make_app

        apps, r = {False: make_app(), True: running.plain_app()}, redis.Redis.from_url(bench.redis_url)
        header = running.machine()
        order = sides(args.concurrency, args.loglevel)
        runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in order}
        for n, k, side in running.alternating(order, args.repeat):
            tag = f"run{n}-{k}"
            res = one_run(apps, r, side, env, api, args, tag, bench.tmp)
            runs[side.name].append(res)
            extra = "".join(f", {k} {v:.1f}" for k, v in res.items() if k.startswith(("rerun", "paged")))
            print(f"run {n + 1}/{args.repeat} {side.name:<30} {res['jobs_s']:7.0f} jobs/s "
                  f"wall {res['wall_s']:.2f} s, worker CPU {res['cpu_ms_job']:.2f} ms/job, "
                  f"{res['commands_job']:.1f} commands/job{extra}", flush=True)
        return running.publish(SECTION, report(args, runs, header), args.out)


if __name__ == "__main__":
    running.run(main)
