"""Throughput of reqworker against a plain Celery task that only calls ``requests.get``.

    .venv/bin/python bench/throughput.py [--jobs 2000] [--concurrency 8] [--repeat 3]

Everything runs on this machine and stops with the script: a private redis-server, a
fast local API (bench/echo_server.py) and, one side at a time, a real worker with the
same settings (threads pool, same concurrency, the project's ``celeryconfig``). Each
job GETs a URL of its own, so the GET cache never hits. A run is timed from the first
enqueue to the moment the last result is stored (seen by polling the result keys with
MGET). Sides alternate and repeat; the medians and ratios go to the ``throughput``
section of bench/RESULTS.md (see bench/results.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import RESULTS, write_section  # noqa: E402
from producer.processes import stop_group  # noqa: E402

GOAL = 0.9
#: This script's section of RESULTS.md (the hand-written notes after it are kept).
SECTION = "throughput"
PY = sys.executable


@dataclass(frozen=True)
class Side:
    name: str
    task: str
    argv: list[str]
    kwargs: Callable[[str], dict[str, Any]]


def sides(concurrency: int, loglevel: str) -> list[Side]:
    from worker.jobs import Job  # the message the producer's Client sends, all fields present

    common = ["--concurrency", str(concurrency), "--pool", "threads", "--loglevel", loglevel]
    celery = [PY, "-m", "celery", "-A", "bench.baseline_app", "worker", "-Q", "reqworker", *common, "-E"]
    reqworker = [PY, "-m", "producer.cli", "worker", *common]  # execs the same celery command line

    def job(cache: bool) -> Callable[[str], dict[str, Any]]:
        return lambda url: {"job": Job(api="bench", url=url, cache=cache).to_message(), "batch_id": None}

    return [
        Side("baseline", "bench.baseline.get", celery, lambda url: {"url": url}),
        Side("reqworker (cache on)", "reqworker.request", reqworker, job(True)),
        Side("reqworker (cache false)", "reqworker.request", reqworker, job(False)),
    ]


class Worker:
    """One worker subprocess in its own process group, logging to a file."""

    def __init__(self, side: Side, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(side.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{tail}")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the worker process so far (Linux)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_group(self.proc)


class Alive(Protocol):
    def alive(self) -> None:
        """Raise when what runs the jobs has died."""


def wait_done(r: Any, ids: list[str], worker: Alive, poll_s: float, limit_s: float = 900) -> int:
    """Poll the result keys in bulk until every job has a final state; returns the failures."""
    pending, failed = [f"celery-task-meta-{i}" for i in ids], 0
    deadline = time.monotonic() + limit_s
    while pending:
        still = []
        for key, raw in zip(pending, r.mget(pending), strict=True):
            status = json.loads(raw)["status"] if raw is not None else None
            if status in ("SUCCESS", "FAILURE", "REVOKED"):
                failed += status != "SUCCESS"
            else:
                still.append(key)
        pending = still
        if pending:
            worker.alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} jobs unfinished after {limit_s:g} s")
            time.sleep(poll_s)
    return failed


def prepare(side: Side, urls: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Task ids and kwargs, built before the clock starts."""
    return [(str(uuid.uuid4()), side.kwargs(u)) for u in urls]


def enqueue(app: Any, side: Side, messages: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One producer connection, one ``send_task`` per job: the same loop for every side."""
    with app.producer_or_acquire() as producer:
        for task_id, kwargs in messages:
            app.send_task(side.task, kwargs=kwargs, task_id=task_id, producer=producer)
    return [task_id for task_id, _ in messages]


def one_run(app: Any, r: Any, side: Side, env: dict[str, str], api: str, args: Any, tag: str,
            logdir: Path) -> dict[str, float]:
    r.flushdb()  # before the worker declares its queue: every run starts from an empty Redis
    worker = Worker(side, env, logdir / f"{tag}.log")
    try:
        while not app.control.ping(timeout=0.5):
            worker.alive()
        warm = [f"{api}/warm/{tag}/{i}" for i in range(args.concurrency * 4)]
        wait_done(r, enqueue(app, side, prepare(side, warm)), worker, 0.05)
        messages = prepare(side, [f"{api}/item/{tag}/{i}" for i in range(args.jobs)])
        cpu0, t0 = worker.cpu_s(), time.perf_counter()
        ids = enqueue(app, side, messages)
        enqueued_s = time.perf_counter() - t0
        failed = wait_done(r, ids, worker, args.poll)
        wall_s, cpu_s = time.perf_counter() - t0, worker.cpu_s() - cpu0
    finally:
        worker.stop()
    if failed:
        raise RuntimeError(f"{side.name}: {failed} of {args.jobs} jobs failed; see {worker.log}")
    return {"jobs_s": args.jobs / wall_s, "wall_s": wall_s, "enqueue_s": enqueued_s,
            "cpu_ms_job": 1000 * cpu_s / args.jobs}


def machine() -> str:
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("celery", "kombu", "redis", "requests", "requests-cache"))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    nproc = len(os.sched_getaffinity(0))
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "worker", "producer", "celeryconfig.py"],
                           capture_output=True, text=True).stdout.count("\n")
    return (f"- machine: {platform.platform()}, {os.cpu_count()} CPUs (nproc {nproc}), "
            f"load average at start {load}\n- Python {platform.python_version()}; {pkgs}; "
            f"redis-server {next((w[2:] for w in redis_v if w.startswith('v=')), '?')}\n"
            f"- code: commit {head.strip() or '?'}, {dirty} changed files under worker/, producer/\n")


def report(args: Any, runs: dict[str, list[dict[str, float]]], header: str) -> str:
    base = statistics.median(x["jobs_s"] for x in runs["baseline"])
    lines = [
        "## Throughput of uncached GETs\n",
        "Goal: 2,000 uncached GETs against a fast local API through reqworker versus a plain Celery "
        "task that only calls `requests.get`, same broker and worker settings, in one run; "
        f"ratio (reqworker jobs/s / baseline jobs/s) >= {GOAL}.\n",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, `.venv/bin/python bench/throughput.py "
        f"--jobs {args.jobs} --concurrency {args.concurrency} --repeat {args.repeat}`\n",
        header,
        f"- {args.jobs} jobs per run, each a distinct URL (the cache never hits); {args.concurrency * 4} "
        f"warm-up jobs first; worker `--pool threads --concurrency {args.concurrency} "
        f"--loglevel {args.loglevel} -E`, `celeryconfig` as committed (acks_late, prefetch 1, JSON, events)",
        f"- wall time from the first enqueue to the last stored result (MGET poll every {args.poll:g} s); "
        "sides alternate; median of the repeats",
        "- API: bench/echo_server.py (asyncio, keep-alive, TCP_NODELAY) in its own process\n",
        "| side | jobs/s (median) | runs jobs/s | worker CPU ms/job | enqueue s | ratio to baseline |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, rs in runs.items():
        med = statistics.median(x["jobs_s"] for x in rs)
        each = ", ".join(f"{x['jobs_s']:.0f}" for x in rs)
        cpu = statistics.median(x["cpu_ms_job"] for x in rs)
        enq = statistics.median(x["enqueue_s"] for x in rs)
        lines.append(f"| {name} | {med:.0f} | {each} | {cpu:.2f} | {enq:.2f} | {med / base:.2f} |")
    ratio = statistics.median(x["jobs_s"] for x in runs["reqworker (cache on)"]) / base
    plain = statistics.median(x["jobs_s"] for x in runs["reqworker (cache false)"]) / base
    verdict = "met" if plain >= GOAL else "NOT met"
    miss = "also met" if ratio >= GOAL else "not met"
    lines.append(f"\n**Ratio {plain:.2f}** for uncached GETs (`\"cache\": false`, like the baseline's "
                 f"bare `requests.get`): goal >= {GOAL} {verdict}. With the default `cache: true`, "
                 f"where every GET is a cache miss that also stores its answer, the ratio is "
                 f"{ratio:.2f} ({miss}).\n")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loglevel", default="INFO", help="worker log level (INFO is reqworker's default)")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between result polls")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks run

    from producer.localredis import LocalRedis

    started: list[Callable[[], None]] = []
    tmp = tempfile.TemporaryDirectory(prefix="reqworker-bench-")
    try:
        redis_server = LocalRedis().start()
        started.append(redis_server.stop)
        server = subprocess.Popen([PY, "-m", "bench.echo_server"], cwd=ROOT, stdout=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, start_new_session=True)

        def stop_server() -> None:
            server.terminate()
            server.wait()

        started.append(stop_server)
        assert server.stdout is not None
        api = f"http://127.0.0.1:{int(server.stdout.readline())}"
        apis = Path(tmp.name) / "apis.toml"
        apis.write_text(f'[apis.bench]\nbase_url = "{api}"\ntimeout = 30\n', encoding="utf-8")
        env = {**os.environ, "REQWORKER_REDIS_URL": redis_server.url, "REQWORKER_APIS": str(apis)}
        os.environ.update(env)  # before celeryconfig is imported by the publishing app below
        import redis

        from producer.celeryapp import make_app

        app, r = make_app(), redis.Redis.from_url(redis_server.url)
        header = machine()
        order = sides(args.concurrency, args.loglevel)
        runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in order}
        for n in range(args.repeat):
            for k, side in enumerate(order if n % 2 == 0 else order[::-1]):
                tag = f"run{n}-{k}"
                res = one_run(app, r, side, env, api, args, tag, Path(tmp.name))
                runs[side.name].append(res)
                print(f"run {n + 1}/{args.repeat} {side.name:<24} {res['jobs_s']:7.0f} jobs/s "
                      f"wall {res['wall_s']:.2f} s, worker CPU {res['cpu_ms_job']:.2f} ms/job", flush=True)
        text = report(args, runs, header)
        write_section(SECTION, text, args.out)
        print(f"\n{text}\nwritten to {args.out}")
        return 0
    finally:
        for stop in reversed(started):
            stop()
        tmp.cleanup()


if __name__ == "__main__":
    from bench.running import run

    run(main)
