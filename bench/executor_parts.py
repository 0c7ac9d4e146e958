"""Where one job's CPU goes in ``Executor.run``: cache on and off, one thread, no Celery.

    .venv/bin/python bench/executor_parts.py [--jobs 3000] [--cprofile FILE]

A private redis-server and bench/echo_server.py; every job GETs a URL of its own.
Each part is timed with ``time.thread_time`` around the function (parts nest; a
part missing from this version of the code is skipped). ``--cprofile`` also dumps a
cProfile of the cache-on loop for ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.running import EchoServer, session  # noqa: E402

#: (module, attribute path, label): the parts timed.
PARTS = [
    ("worker.executor", "Executor.run", "Executor.run (total)"),
    ("worker.executor", "parse_job", "parse_job (the job again, in the worker)"),
    ("worker.admission", "Gate.enter", "fleet limits: Gate.enter (Redis script)"),
    ("worker.admission", "Gate.after", "fleet limits: Gate.after"),
    ("requests", "Session.send", "HTTP send (requests.Session.send)"),
    ("requests", "Session.merge_environment_settings", "requests: proxies from the environment"),
    ("requests_cache.backends.base", "BaseCache.create_key", "cache: create_key"),
    ("requests_cache.backends.base", "BaseCache.get_response", "cache: get_response (miss)"),
    ("requests_cache.backends.base", "BaseCache.save_response", "cache: save_response (total)"),
    ("requests_cache.backends.redis", "RedisDict.__setitem__", "cache:   serialize + SETEX"),
    ("requests_cache.models.response", "CachedResponse.from_response", "cache:   CachedResponse"),
    ("requests_cache.policy.actions", "CacheActions.from_request", "cache: CacheActions.from_request"),
    ("requests_cache.policy.actions", "CacheActions.update_from_response", "cache: update_from_response"),
]


def instrument(acc: dict[str, float]) -> None:
    import importlib

    for module, path, label in PARTS:
        try:
            owner: Any = importlib.import_module(module)
            *outer, name = path.split(".")
            for part in outer:
                owner = getattr(owner, part)
            original = getattr(owner, name)
        except (ImportError, AttributeError):
            continue

        def timed(*a: Any, _f: Callable[..., Any] = original, _l: str = label, **k: Any) -> Any:
            started = time.thread_time()
            try:
                return _f(*a, **k)
            finally:
                acc[_l] += time.thread_time() - started

        setattr(owner, name, functools.wraps(original)(timed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--cprofile", type=Path, default=None)
    args = parser.parse_args()
    with session() as bench:
        server = EchoServer()
        bench.stop_later(server.stop)
        api = server.wait_port().url
        bench.configure(f'[apis.bench]\nbase_url = "{api}"\ntimeout = 30\n')
        from worker.executor import JobContext, Spent
        from worker.jobs import parse_job
        from worker.runtime import build_runtime

        rt = build_runtime()

        def run(cache: bool, tag: str, n: int) -> None:
            for i in range(n):
                raw = {"api": "bench", "url": f"{api}/item/{tag}/{i}", "cache": cache}
                message = parse_job(raw, rt.profiles).to_message()
                outcome = rt.executor.run(message, Spent(), JobContext(job_id=str(i)))
                assert getattr(outcome, "record", {}).get("ok"), outcome

        run(True, "warm", 200)
        run(False, "warm", 200)
        if args.cprofile:
            profile = cProfile.Profile()
            profile.runcall(run, True, "profiled", args.jobs)
            profile.dump_stats(args.cprofile)
        acc: dict[str, float] = collections.defaultdict(float)
        instrument(acc)
        for cache in (True, False):
            acc.clear()
            started = time.thread_time()
            run(cache, f"cache-{cache}", args.jobs)
            total = time.thread_time() - started
            print(f"cache={str(cache).lower()}: {1000 * total / args.jobs:.3f} ms CPU per job "
                  "(whole loop, with parse_job)")
            for label, spent in acc.items():
                print(f"  {1000 * spent / args.jobs:7.3f} ms  {label}")
    return 0


if __name__ == "__main__":
    from bench.running import run

    run(main)
