"""The bench's baseline: a plain Celery app, configured from the same ``celeryconfig``
as reqworker's, whose tasks only call ``requests.get``.

Run by bench/throughput.py and bench/ratelimit.py as
``python -m celery -A bench.baseline_app worker ...``.
"""

from __future__ import annotations

import os
from typing import Any

import requests
from celery import Celery, Task

#: The registered name of the baseline task.
TASK_NAME = "bench.baseline.get"
#: The registered name of the rate-limited baseline task (bench/ratelimit.py).
LIMITED_TASK_NAME = "bench.baseline.get_limited"
#: Celery's own per-worker rate limit of the limited task ("50/s" unless the bench says).
RATE_LIMIT = os.environ.get("BENCH_RATE_LIMIT", "50/s")
#: Retries of a refused (429) request before the limited task gives up.
MAX_429_RETRIES = 100

app = Celery("bench-baseline")
app.config_from_object("celeryconfig")


@app.task(name=TASK_NAME, acks_late=True)
def get(url: str) -> dict[str, Any]:
    r = requests.get(url, timeout=30)
    return {"status": r.status_code, "body": r.json()}


@app.task(name=LIMITED_TASK_NAME, bind=True, acks_late=True, rate_limit=RATE_LIMIT,
          max_retries=MAX_429_RETRIES)
def get_limited(self: Task, url: str) -> dict[str, Any]:
    """GET ``url``; on a 429, retry with the Retry-After as countdown (what a user would write)."""
    r = requests.get(url, timeout=30)
    if r.status_code == 429:
        raise self.retry(countdown=float(r.headers.get("Retry-After") or 1))
    r.raise_for_status()
    return {"status": r.status_code, "attempts": self.request.retries + 1}
