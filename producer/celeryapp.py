"""A Celery app for publishing only: it knows the task by name, not its code."""

from __future__ import annotations

from celery import Celery


def make_app() -> Celery:
    app = Celery("reqworker")
    app.config_from_object("celeryconfig")
    return app
