"""The bench's library: what every bench script starts, runs its sides with, and ends with.

A script's ``main`` is ``arguments(__doc__)`` for its options (``--out`` included), then
``with session() as bench:`` (a private redis-server, a temporary directory, SIGTERM as a
clean exit; everything ``bench.stop_later`` was given stops at the end), ``bench.configure``
for the profiles and the environment, and ``publish`` for its section of RESULTS.md.
Run it through ``run(main)``: exit code, or 130 after a Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

from bench.results import RESULTS, write_section
from producer.demo.processes import stop_group, stop_groups

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(main: Callable[[], int]) -> NoReturn:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything the bench started is stopped", file=sys.stderr)
        sys.exit(130)


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A bench script's option parser, its docstring as the help, with ``--out`` (RESULTS.md)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results file to write the section to")
    return parser


@dataclass
class Bench:
    """One bench run's private Redis, temporary directory and things to stop at its end."""

    tmp: Path
    redis_url: str
    stack: ExitStack

    def stop_later(self, stop: Callable[[], object]) -> None:
        """Call ``stop`` when the run ends (the last given first), Ctrl-C and errors included."""
        self.stack.callback(stop)

    def configure(self, profiles: str, **extra: str) -> dict[str, str]:
        """Write ``profiles`` as the run's apis.toml; the environment of its processes, made this one's too
        (before celeryconfig is imported by a publishing app)."""
        apis = self.tmp / "apis.toml"
        apis.write_text(profiles, encoding="utf-8")
        env = {**os.environ, "REQWORKER_REDIS_URL": self.redis_url, "REQWORKER_APIS": str(apis),
               "BENCH_REDIS_URL": self.redis_url, **extra}
        os.environ.update(env)
        return env


@contextmanager
def session() -> Iterator[Bench]:
    """A private redis-server and a temporary directory, both gone at the end, with all given to
    ``stop_later``; SIGTERM ends the run the way an error does, so the clean-up runs."""
    from producer.demo.localredis import LocalRedis

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="reqworker-bench-"))
        server = stack.enter_context(LocalRedis())
        yield Bench(Path(tmp), server.url, stack)


def alternating(order: Sequence[T], repeat: int) -> Iterator[tuple[int, int, T]]:
    """``(repeat index, position, side)``: every side once per repeat, reversed every other time."""
    for n in range(repeat):
        for k, side in enumerate(order if n % 2 == 0 else order[::-1]):
            yield n, k, side


def publish(section: str, text: str, out: Path) -> int:
    """Write ``text`` as the script's section of ``out``, show it, and return exit code 0."""
    write_section(section, text, out)
    print(f"\n{text}\nwritten to {out}")
    return 0


class EchoServer:
    """bench/echo_server.py in its own process, with ``options`` (``--limit``, ``--storm``, ``--delay``)."""

    def __init__(self, *options: str) -> None:
        self.proc = subprocess.Popen([PY, "-m", "bench.echo_server", *options], cwd=ROOT,
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.url = ""

    def wait_port(self) -> EchoServer:
        """Read the port the server printed; its ``url`` from then on."""
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        return self

    def call(self, path: str) -> dict[str, Any]:
        """GET one of the server's own paths (``/_stats``, ``/_reset``)."""
        import requests

        return dict(requests.get(self.url + path, timeout=30).json())

    def stop(self) -> None:
        stop_group(self.proc)


@dataclass(frozen=True)
class Side:
    name: str
    task: str
    argv: list[str]
    kwargs: Callable[[str], dict[str, Any]]
    #: A plain Celery side: published through ``bench.baseline_app`` (Celery's defaults).
    plain: bool = False


def plain_app() -> Any:
    """The baselines' publishing app: ``bench.baseline_app`` (Celery's defaults, BENCH_REDIS_URL)."""
    from bench.baseline_app import app

    return app


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


class Fleet:
    """Several worker processes of one side, each in its own process group."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.logs: list[Path] = []

    def start(self, side: Side, count: int, env: dict[str, str], logdir: Path, tag: str) -> None:
        for i in range(count):
            named = replace(side, argv=[*side.argv, "--hostname", f"{tag}-{i}@%h"])
            self.logs.append(logdir / f"{tag}-{i}.log")
            self.workers.append(Worker(named, env, self.logs[-1]))

    def alive(self) -> None:
        for worker in self.workers:
            worker.alive()

    def wait_ready(self, app: Any, limit_s: float = 180) -> None:
        """Until every worker answers a ping (so none starts late and misses the jobs)."""
        deadline = time.monotonic() + limit_s
        seen: set[str] = set()
        while len(seen) < len(self.workers):
            self.alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(seen)} of {len(self.workers)} workers answered")
            seen.update(name for reply in app.control.ping(timeout=0.5) for name in reply)

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM to every worker at once (their warm shutdowns overlap), SIGKILL after ``grace_s``."""
        stop_groups((worker.proc for worker in self.workers), grace_s)

    def requeued(self) -> int:
        """Times reqworker sent a job back to the queue to wait (budget or pause; its INFO lines)."""
        return sum(1 for log in self.logs for line in log.read_text(errors="replace").splitlines()
                   if "] job " in line and " waits " in line)


def prepare(side: Side, urls: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Task ids and kwargs, built before the clock starts."""
    return [(str(uuid.uuid4()), side.kwargs(u)) for u in urls]


def enqueue(app: Any, side: Side, messages: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """A plain side: one ``send_task`` per job on one producer connection, as a user writes it.
    reqworker: its own bulk publisher (``reqworker enqueue``'s), which, unlike ``send_task``,
    subscribes to no result channel, and packs jobs into bundles as ``reqworker enqueue``
    does (``REQWORKER_JOBS_PER_MESSAGE``; ``producer.bundling``)."""
    if side.plain:
        with app.producer_or_acquire() as producer:
            for task_id, kwargs in messages:
                app.send_task(side.task, kwargs=kwargs, task_id=task_id, producer=producer)
    else:
        from producer.bundling import pack, packable
        from producer.publish import Outgoing, make_publisher
        from worker.jobs import Job
        from worker.profiles import load_profiles
        from worker.settings import Settings

        settings = Settings.from_env()
        publisher = make_publisher(app, settings)
        profiles = load_profiles(settings.apis_path, with_secrets=False)
        outgoing = []
        for task_id, kwargs in messages:
            job = Job(**kwargs["job"])
            outgoing.append(Outgoing(task_id, kwargs, job.shown_arguments(kwargs["batch_id"]),
                                     packable=packable(job, profiles)))
        publisher.publish(pack(outgoing, publisher.per_message))
    return [task_id for task_id, _ in messages]


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
