"""Bulk enqueue: jobs from a JSON Lines file through ``reqworker enqueue FILE``, against a
plain ``send_task`` loop with Celery's default settings, in one run.

    .venv/bin/python bench/enqueue.py [--jobs 50000] [--repeat 3] [--rss-jobs 50000,200000]
                                       [--cprofile FILE]

A private redis-server and no workers: only the producer is measured.

- reqworker: the real command, ``reqworker enqueue FILE`` in a subprocess: read and decode
  each line, validate it (``parse_job``), record the batch, claim each GET's fingerprint
  (duplicates run once), and LPUSH the task messages in pipelined chunks. Its start-up
  (the same command on a one-line file, median of 3) is subtracted from its wall time.
- send_task loop: what a user without reqworker writes, with Celery's default settings
  (``bench.baseline_app``: no task-sent events) and one producer connection: read each
  line, ``json.loads`` it, ``app.send_task("reqworker.request", kwargs={"job": job})``.
  Timed from opening the file to the last message sent.

The queue and every reqworker key are deleted between runs; sides alternate. Peak RSS
growth of the reqworker path is measured in a fresh process per size (``--rss-jobs``):
VmHWM after the enqueue minus VmRSS before it, with the peak reset first (``5`` written to
``/proc/self/clear_refs``). Memory is flat when the largest size's growth stays under
``GOAL_RSS_MIB``, far less than its file (about 18 MiB at 200,000 jobs): the enqueue streams
its input. The results go to the ``enqueue`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import running  # noqa: E402
from bench.running import PY  # noqa: E402

#: This script's section of RESULTS.md.
SECTION = "enqueue"
GOAL_JOBS_S = 20_000
GOAL_RATIO = 10.0
#: Peak RSS growth allowed for the largest ``--rss-jobs`` run: the enqueue streams its file.
GOAL_RSS_MIB = 40
PROFILE = "bench"
BULK = "reqworker enqueue FILE"
LOOP = "send_task loop (Celery defaults)"


def job_line(i: int) -> str:
    """One job of the bench's file: a distinct GET with a query parameter and a key."""
    return json.dumps({"api": PROFILE, "path": f"/items/{i}", "params": {"fields": "id,name"},
                       "key": f"row-{i}"})


def write_jobs(path: Path, count: int) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(count):
            out.write(job_line(i) + "\n")
    return path


def status_kb(field: str) -> int:
    """A ``VmRSS``/``VmHWM``-style field of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def bulk(client: Any, path: Path) -> float:
    """reqworker's path, as ``reqworker enqueue`` runs it; returns the seconds it took."""
    from producer.jsonl import read_jobs, read_lines

    t0 = time.perf_counter()
    with open(path, "rb") as stream:
        report = client.submit_numbered(read_jobs(read_lines(stream)), name="enqueue bench")
    elapsed = time.perf_counter() - t0
    if report.rejected:
        raise RuntimeError(f"{len(report.rejected)} lines refused, first: {report.rejected[0]}")
    return elapsed


def cli(env: dict[str, str], path: Path) -> float:
    """``reqworker enqueue FILE`` as a user runs it; returns its wall seconds."""
    command = [str(Path(PY).with_name("reqworker")), "enqueue", str(path), "--name", "enqueue bench"]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"reqworker enqueue exited {done.returncode}:\n{done.stderr[-3000:]}")
    return elapsed


def loop(app: Any, path: Path) -> float:
    """A plain ``send_task`` loop on one producer connection; returns the seconds it took."""
    from worker.jobs import TASK_NAME

    t0 = time.perf_counter()
    with open(path, encoding="utf-8") as lines, app.producer_or_acquire() as producer:
        for line in lines:
            app.send_task(TASK_NAME, kwargs={"job": json.loads(line)}, producer=producer)
    return time.perf_counter() - t0


def clear(r: Any, queues: tuple[str, ...], prefix: str) -> None:
    """Delete the queues and every reqworker key (batch records, fingerprints)."""
    r.delete(*queues)
    keys: list[bytes] = []
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        keys.append(key)
        if len(keys) >= 1000:
            r.unlink(*keys)
            keys.clear()
    if keys:
        r.unlink(*keys)


def rss_child(args: Any) -> int:
    """In a fresh process: enqueue ``--jobs`` through the bulk path, print its peak RSS growth."""
    from producer.client import Client

    client = Client.from_env()
    path = Path(args.file)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    before = status_kb("VmRSS")
    elapsed = bulk(client, path)
    peak = status_kb("VmHWM")
    print(json.dumps({"jobs": args.jobs, "jobs_s": args.jobs / elapsed, "rss_before_kb": before,
                      "growth_kb": peak - before}))
    return 0


def rss_run(env: dict[str, str], tmp: Path, jobs: int) -> dict[str, float]:
    path = write_jobs(tmp / f"rss-{jobs}.jsonl", jobs)
    file_kb = path.stat().st_size / 1024
    try:
        out = subprocess.run([PY, str(Path(__file__).resolve()), "--rss-child", "--jobs", str(jobs),
                              "--file", str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True, timeout=1800).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"memory run failed:\n{exc.stderr[-3000:]}") from None
    finally:
        path.unlink()
    return {**json.loads(out.strip().splitlines()[-1]), "file_kb": file_kb}


def flat(memory: list[dict[str, float]]) -> tuple[bool, str]:
    """Whether the largest run's peak RSS grew by less than ``GOAL_RSS_MIB``, and the line saying so."""
    largest = max(memory, key=lambda m: m["jobs"])
    grown, size = largest["growth_kb"] / 1024, largest["file_kb"] / 1024
    met = grown < GOAL_RSS_MIB
    return met, (f"**memory {'flat' if met else 'NOT flat'}**: peak RSS grew by {grown:.1f} MiB for "
                 f"{int(largest['jobs']):,} jobs in a {size:.0f} MiB file (goal: < {GOAL_RSS_MIB} MiB).")


def report(args: Any, runs: dict[str, list[float]], startup_s: float, memory: list[dict[str, float]],
           header: str) -> str:
    rate = {name: statistics.median(args.jobs / s for s in secs) for name, secs in runs.items()}
    ratio = rate[BULK] / rate[LOOP]
    lines = [
        f"## Bulk enqueue: {args.jobs:,} jobs to a local Redis\n",
        f"Goal: `reqworker enqueue FILE` at >= {GOAL_RATIO:g}x a plain `send_task` loop with Celery's "
        f"default settings (no sent events, one producer) in the same run, and >= {GOAL_JOBS_S:,} jobs/s "
        "to a local Redis; flat memory.\n",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, `.venv/bin/python bench/enqueue.py "
        f"--jobs {args.jobs} --repeat {args.repeat} --rss-jobs {args.rss_jobs or '0'}`\n",
        header,
        f"- {args.jobs:,} jobs in a JSON Lines file, each a distinct GET like `{job_line(0)}`",
        f"- {BULK}: the command in a subprocess, its start-up ({startup_s:.2f} s: the same command on a "
        "one-line file, median of 3) subtracted: read and decode each line, `parse_job`, batch record, "
        "fingerprint claim (duplicates run once), task messages LPUSHed in pipelined chunks",
        f"- {LOOP}: `bench/baseline_app.py` (Celery's default settings: no task-sent events), one producer "
        "connection; read each line, `json.loads`, `app.send_task(\"reqworker.request\", kwargs={\"job\": "
        "job})`; timed from opening the file to the last message sent",
        "- private redis-server (no persistence), no workers; queues and reqworker keys deleted between "
        "runs; sides alternate; median of the runs; queue length checked after each run\n",
        "| side | jobs/s (median) | runs jobs/s | µs per job | ratio to the loop |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for name, secs in runs.items():
        each = ", ".join(f"{args.jobs / s:,.0f}" for s in secs)
        lines.append(f"| {name} | {rate[name]:,.0f} | {each} | {1e6 / rate[name]:.0f} | "
                     f"{rate[name] / rate[LOOP]:.1f} |")
    if memory:
        lines += ["", "Peak RSS growth of the reqworker path, each size in a fresh process (VmHWM after "
                  "minus VmRSS before, peak reset through `/proc/self/clear_refs`):", "",
                  "| jobs | file | jobs/s | RSS before | peak RSS growth |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for m in memory:
            lines.append(f"| {int(m['jobs']):,} | {m['file_kb'] / 1024:.1f} MiB | {m['jobs_s']:,.0f} | "
                         f"{m['rss_before_kb'] / 1024:.1f} MiB | {m['growth_kb'] / 1024:.1f} MiB |")
        lines += ["", flat(memory)[1]]
    met = rate[BULK] >= GOAL_JOBS_S and ratio >= GOAL_RATIO
    lines.append(f"\n**{rate[BULK]:,.0f} jobs/s, {ratio:.1f}x the loop**: goal (>= {GOAL_JOBS_S:,} jobs/s "
                 f"and >= {GOAL_RATIO:g}x) {'met' if met else 'NOT met'}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = running.arguments(__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-jobs", default="50000,200000",
                        help="comma-separated sizes for the peak RSS runs; 0 or '' to skip them")
    parser.add_argument("--cprofile", type=Path, default=None,
                        help="also profile one more reqworker run and dump it here (python -m pstats)")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(args)
    with running.session() as bench:
        env = bench.configure(f'[apis.{PROFILE}]\nbase_url = "http://127.0.0.1:9"\n')
        import redis

        from bench.baseline_app import app as plain
        from producer.bundling import job_ids
        from producer.client import Client

        header = running.machine()
        client = Client.from_env()
        settings = client.settings
        queues = (client.app.conf.task_default_queue, plain.conf.task_default_queue)
        r = redis.Redis.from_url(bench.redis_url)
        path = write_jobs(bench.tmp / "jobs.jsonl", args.jobs)
        one = write_jobs(bench.tmp / "one.jsonl", 1)
        startups = []
        for _ in range(3):
            startups.append(cli(env, one))
            clear(r, queues, settings.key_prefix)
        startup_s = statistics.median(startups)
        sides: dict[str, Callable[[], float]] = {BULK: lambda: cli(env, path) - startup_s,
                                                 LOOP: lambda: loop(plain, path)}
        runs: dict[str, list[float]] = {name: [] for name in sides}
        for n, _, name in running.alternating(list(sides), args.repeat):
            clear(r, queues, settings.key_prefix)
            elapsed = sides[name]()
            queued = sum(len(job_ids(r.lrange(q, 0, -1))) for q in queues)
            if queued != args.jobs:
                raise RuntimeError(f"{name}: {queued} jobs queued, not {args.jobs}")
            runs[name].append(elapsed)
            print(f"run {n + 1}/{args.repeat} {name:<36} {args.jobs / elapsed:9,.0f} jobs/s "
                  f"({elapsed:.2f} s)", flush=True)
        clear(r, queues, settings.key_prefix)
        if args.cprofile:
            profiler = cProfile.Profile()
            profiler.runcall(bulk, client, path)
            clear(r, queues, settings.key_prefix)
            profiler.dump_stats(args.cprofile)
            pstats.Stats(str(args.cprofile)).sort_stats("tottime").print_stats(25)
        memory = []
        for size in (int(x) for x in str(args.rss_jobs).split(",") if x.strip() and int(x)):
            memory.append(rss_run(env, bench.tmp, size))
            clear(r, queues, settings.key_prefix)
            print(f"peak RSS growth for {size:,} jobs: {memory[-1]['growth_kb'] / 1024:.1f} MiB "
                  f"({memory[-1]['jobs_s']:,.0f} jobs/s)", flush=True)
        return running.publish(SECTION, report(args, runs, startup_s, memory, header), args.out)


if __name__ == "__main__":
    running.run(main)
