"""How a worker's log lines look: readable text by default, or one JSON object per line.

Both formats name the job, batch and profile of the task a line was logged from, and
neither carries an API body: Celery's "succeeded" line would show the returned result
record (with its body), so its value is replaced here. Secrets never reach a log
message in the first place (jobs carry none, and tokens are logged redacted).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

FORMAT_ENV = "REQWORKER_LOG_FORMAT"
FORMATS = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
#: What Celery's "Task ... succeeded in N s: VALUE" line shows instead of the result record.
RESULT_NOT_LOGGED = "(result stored, not logged)"


class LogFormatError(ValueError):
    """``REQWORKER_LOG_FORMAT`` names no format."""


def log_format(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    value = (env.get(FORMAT_ENV) or "text").strip().lower()
    if value not in FORMATS:
        raise LogFormatError(f"{FORMAT_ENV}={value!r}: the log format is one of {', '.join(FORMATS)}")
    return value


def task_context() -> dict[str, Any]:
    """The job id, batch id and profile of the Celery task running in this thread, if any."""
    from celery._state import get_current_task

    task = get_current_task()
    request = getattr(task, "request", None)
    job_id = getattr(request, "id", None)
    if not job_id:
        return {"job_id": None, "batch_id": None, "api": None}
    kwargs = getattr(request, "kwargs", None) or {}
    job = kwargs.get("job")
    api = job.get("api") if isinstance(job, dict) else None
    return {"job_id": job_id, "batch_id": kwargs.get("batch_id"), "api": api}


class NoResultBodies(logging.Filter):
    """Replaces the result record in Celery's "succeeded" line (it holds the API's body)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": RESULT_NOT_LOGGED}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job_id, batch_id, api."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **task_context(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Celery's kind of line, with ``[job … batch … api …]`` when logged from a job."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = task_context()
        if ctx["job_id"]:
            where = " ".join(f"{name.removesuffix('_id')}={value}" for name, value in ctx.items() if value)
            first, newline, rest = line.partition("\n")
            line = f"{first} [{where}]{newline}{rest}"
        return line


def install(fmt: str) -> None:
    """Log to stderr in ``fmt`` from now on; Celery keeps this handler instead of adding its own."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.__stderr__))
    apply(root, fmt)
    if fmt == "json":
        # The worker prints a few lines itself ("worker: Warm shutdown (MainProcess)");
        # in JSON they become log lines like any other.
        import celery.apps.worker

        celery.apps.worker.safe_say = _say


def _say(msg: str, f: Any = None) -> None:
    logging.getLogger("celery.apps.worker").warning("%s", msg)


def apply(logger: logging.Logger, fmt: str) -> None:
    """Give every handler of ``logger`` the chosen format and the filter that keeps bodies out."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    for handler in logger.handlers:
        handler.setFormatter(formatter)
        if not any(isinstance(f, NoResultBodies) for f in handler.filters):
            handler.addFilter(NoResultBodies())
    logging.captureWarnings(True)
