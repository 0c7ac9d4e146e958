"""Reading jobs from JSON Lines: one job per line, blank lines skipped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from worker.jobs import JobError


def read_jobs(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's number and its decoded object, or a ``JobError`` saying why not."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, JobError("", f"not valid JSON: {exc.msg} at column {exc.colno}")
