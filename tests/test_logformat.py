"""The worker's log lines: JSON objects or readable text, naming the job, never its result body."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from celery import Celery
from celery._state import _task_stack

from worker.logformat import (
    RESULT_NOT_LOGGED,
    JsonFormatter,
    LogFormatError,
    NoResultBodies,
    TextFormatter,
    log_format,
)

app = Celery("logformat-test")


@app.task(name="logformat.probe")
def probe() -> None:
    """A task to stand in the current-task slot, as a worker thread has it."""


@pytest.fixture
def in_a_job() -> Iterator[None]:
    probe.push_request(id="job-1", kwargs={"job": {"api": "spotify", "path": "/x"}, "batch_id": "b-9"})
    _task_stack.push(probe)
    yield
    _task_stack.pop()
    probe.pop_request()


def record(msg: str, args: object = None, name: str = "reqworker.task") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]


def test_a_json_line_has_every_field_and_the_job_it_came_from(in_a_job: None) -> None:
    line = JsonFormatter().format(record("job %s countdown=%s", ("job-1", 0.5)))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO"
    assert entry["logger"] == "reqworker.task"
    assert entry["message"] == "job job-1 countdown=0.5"
    assert (entry["job_id"], entry["batch_id"], entry["api"]) == ("job-1", "b-9", "spotify")
    assert entry["time"].endswith("+00:00")


def test_outside_a_job_the_job_fields_are_null() -> None:
    entry = json.loads(JsonFormatter().format(record("celery@x ready.")))
    assert entry["job_id"] is None
    assert entry["batch_id"] is None
    assert entry["api"] is None


def test_a_traceback_stays_inside_its_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_text_lines_name_the_job_only_inside_one(in_a_job: None) -> None:
    line = TextFormatter().format(record("job job-1 countdown=0.5"))
    assert line.endswith("job job-1 countdown=0.5 [job=job-1 batch=b-9 api=spotify]")
    assert " INFO " in line
    assert " reqworker.task: " in line


def test_celerys_succeeded_line_does_not_show_the_result_body() -> None:
    rec = record("Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
                 {"name": "reqworker.request", "id": "j", "runtime": 0.1,
                  "return_value": "{'body': {'secret': 'from the API'}}"}, name="celery.app.trace")
    assert NoResultBodies().filter(rec)
    for formatter in (JsonFormatter(), TextFormatter()):
        shown = formatter.format(rec)
        assert "from the API" not in shown
        assert RESULT_NOT_LOGGED in shown


def test_the_format_setting_is_text_or_json() -> None:
    assert log_format({}) == "text"
    assert log_format({"REQWORKER_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(LogFormatError, match="text, json"):
        log_format({"REQWORKER_LOG_FORMAT": "xml"})
