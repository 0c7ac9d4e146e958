"""The bench's baselines: plain Celery apps with Celery's default settings.

What a user without reqworker would write: nothing configured but the broker and result
backend URLs (``BENCH_REDIS_URL``); JSON is Celery's default serializer, the default
queue is ``celery``, messages are acknowledged early, the prefetch multiplier is 4. The
bench scripts say next to each figure what they add on the command line (``-E`` when
the scenario has Flower watching, the pool and the concurrency).

Run as ``python -m celery -A bench.baseline_app worker ...``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import requests
from celery import Celery, Task
from requests_cache import CachedSession

#: A task that only calls ``requests.get`` (bench/throughput.py, bench/slowapi.py).
TASK_NAME = "bench.baseline.get"
#: The same through requests-cache's own ``CachedSession`` on the same Redis (bench/throughput.py).
CACHED_TASK_NAME = "bench.baseline.get_cached"
#: The registered name of the rate-limited baseline task (bench/ratelimit.py).
LIMITED_TASK_NAME = "bench.baseline.get_limited"
#: Celery's own per-worker rate limit of the limited task ("50/s" unless the bench says).
RATE_LIMIT = os.environ.get("BENCH_RATE_LIMIT", "50/s")
#: Retries of a refused (429) request before the limited task gives up.
MAX_429_RETRIES = 100

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench-baseline", broker=REDIS_URL, backend=REDIS_URL)

#: What a user of requests-cache writes: one session for the process, Redis backend, defaults.
_cached = CachedSession("bench-baseline", backend="redis", connection=redis.Redis.from_url(REDIS_URL))


@app.task(name=TASK_NAME)
def get(url: str) -> dict[str, Any]:
    r = requests.get(url, timeout=30)
    return {"status": r.status_code, "body": r.json()}


@app.task(name=CACHED_TASK_NAME)
def get_cached(url: str) -> dict[str, Any]:
    r = _cached.get(url, timeout=30)
    return {"status": r.status_code, "body": r.json(), "from_cache": r.from_cache}


@app.task(name=LIMITED_TASK_NAME, bind=True, rate_limit=RATE_LIMIT, max_retries=MAX_429_RETRIES)
def get_limited(self: Task, url: str) -> dict[str, Any]:
    """GET ``url``; on a 429, retry with the Retry-After as countdown (what a user would write)."""
    r = requests.get(url, timeout=30)
    if r.status_code == 429:
        raise self.retry(countdown=float(r.headers.get("Retry-After") or 1))
    r.raise_for_status()
    return {"status": r.status_code, "attempts": self.request.retries + 1}
