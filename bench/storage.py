"""Redis bytes per job: what a finished batch keeps, by kind of key, with 4 KB bodies.

    .venv/bin/python bench/storage.py [--jobs 500] [--body-bytes 4096]

A private redis-server, a loopback API answering every request with a JSON body of
``--body-bytes``, and one real worker. It runs a batch of distinct GETs (cached) and
a batch of POSTs (never cached, marked in flight while sent), then sums ``MEMORY
USAGE`` over every key by kind and divides by the jobs. ``used_memory`` before and
after is given too: it includes Redis's own overhead (its allocator, the key space).
The results go to the ``storage`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.running import PY, arguments, machine, publish  # noqa: E402
from producer.client import Client  # noqa: E402
from producer.demo.localredis import LocalRedis  # noqa: E402
from producer.demo.loopback import LoopbackAPI, Reply  # noqa: E402
from producer.demo.processes import stop_group  # noqa: E402
from worker.profiles import load_profiles  # noqa: E402
from worker.settings import Settings  # noqa: E402

SECTION = "storage"
PREFIX = "reqworker"


def kind(key: str) -> str:
    """What a key holds, by its name."""
    if key.startswith("celery-task-meta-"):
        return "result (celery-task-meta-*)"
    for part, name in (("cache", "GET cache entry"), ("sent", "in-flight mark")):
        if key.startswith(f"{PREFIX}:{part}:"):
            return name
    if key.startswith(f"{PREFIX}:batch:"):
        return "batch record (jobs list, sets, hash)"
    return "other (the queue, kombu bindings)"


def measure(client: redis.Redis[bytes]) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        sizes[kind(key)] += int(client.memory_usage(key, samples=0) or 0)
    return dict(sizes)


def run(jobs: int, body_bytes: int) -> str:
    body = {"data": "x" * (body_bytes - 12)}
    api = LoopbackAPI(fallback=lambda hit: Reply(json={**body, "path": hit.path}))
    with LocalRedis() as server, api, tempfile.TemporaryDirectory() as tmp:
        apis = Path(tmp) / "apis.toml"
        apis.write_text(f'[apis.bench]\nbase_url = "{api.url}"\ntimeout = 10\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REQWORKER_", "CELERY_"))}
        env.update(REQWORKER_REDIS_URL=server.url, REQWORKER_APIS=str(apis),
                   PYTHONPATH=str(ROOT))
        client = Client(Settings.from_env(env), load_profiles(apis, env))
        conn = redis.Redis.from_url(server.url)
        log = open(Path(tmp) / "worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen([PY, "-m", "producer.cli", "worker", "--concurrency", "8"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        rows = []
        try:
            for method in ("GET", "POST"):
                conn.flushdb()
                before = int(conn.info("memory")["used_memory"])
                report = client.submit_many(
                    [{"api": "bench", "method": method, "path": f"/{method.lower()}/{i}",
                      "json": {"n": i} if method == "POST" else None} for i in range(jobs)])
                report.batch.wait(poll_s=0.2, timeout_s=600)
                time.sleep(1)  # the last acknowledgements and events settle
                after = int(conn.info("memory")["used_memory"])
                sizes = measure(conn)
                rows.append((method, sizes, (after - before) / jobs))
        finally:
            stop_group(worker, grace_s=60)
            log.close()
    lines = [f"## Redis bytes per job ({body_bytes:,} B JSON bodies)", "",
             f"`bench/storage.py --jobs {jobs}`, {dt.date.today().isoformat()}: `MEMORY USAGE` "
             "summed by kind of key after the batch finished, per job.", "", machine(), "",
             "| jobs | kind of key | bytes per job |", "| --- | --- | ---: |"]
    for method, sizes, used in rows:
        for name, total in sorted(sizes.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {method} | {name} | {total / jobs:,.0f} |")
        lines.append(f"| {method} | **all keys** | **{sum(sizes.values()) / jobs:,.0f}** |")
        lines.append(f"| {method} | `used_memory` growth | {used:,.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--body-bytes", type=int, default=4096)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    text = run(args.jobs, args.body_bytes)
    if args.no_write:
        print(text)
        return 0
    return publish(SECTION, text, args.out)


if __name__ == "__main__":
    from bench import running

    running.run(main)
