"""A Celery app for publishing only: it knows the task by name, not its code."""

from __future__ import annotations

from celery import Celery

from celeryconfig import celery_settings
from worker.settings import Settings


def make_app(settings: Settings | None = None) -> Celery:
    """An app for ``settings``; without them, those the environment holds now."""
    app = Celery("reqworker", set_as_current=False)
    app.conf.update(celery_settings(settings or Settings.from_env()))
    return app
