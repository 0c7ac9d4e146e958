"""The baseline of bench/waiting.py: a plain Celery app with Celery's default settings.

What a user without reqworker would write: one task that GETs a URL and, on a 429,
retries with the Retry-After as its countdown. Nothing but the broker and result
backend URLs (``BENCH_REDIS_URL``) is configured; JSON is Celery's default.
Run as ``python -m celery -A bench.plain_app worker ...``.
"""

from __future__ import annotations

import os
from typing import Any

import requests
from celery import Celery, Task

#: The registered name of the baseline task.
TASK_NAME = "bench.plain.get_retry_after"

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench-plain", broker=_URL, backend=_URL)


@app.task(name=TASK_NAME, bind=True, max_retries=None)
def get_retry_after(self: Task, url: str) -> dict[str, Any]:
    r = requests.get(url, timeout=30)
    if r.status_code == 429:
        raise self.retry(countdown=float(r.headers.get("Retry-After") or 1))
    r.raise_for_status()
    return {"status": r.status_code, "attempts": self.request.retries + 1}
