"""The bench's baseline: a plain Celery app, configured from the same ``celeryconfig``
as reqworker's, whose one task only calls ``requests.get``.

Run by bench/throughput.py as ``python -m celery -A bench.baseline_app worker ...``.
"""

from __future__ import annotations

from typing import Any

import requests
from celery import Celery

#: The registered name of the baseline task.
TASK_NAME = "bench.baseline.get"

app = Celery("bench-baseline")
app.config_from_object("celeryconfig")


@app.task(name=TASK_NAME, acks_late=True)
def get(url: str) -> dict[str, Any]:
    r = requests.get(url, timeout=30)
    return {"status": r.status_code, "body": r.json()}
