"""A Celery app for publishing only: it knows the task by name, not its code."""

from __future__ import annotations

from celery import Celery

from worker.settings import Settings


def make_app(settings: Settings | None = None) -> Celery:
    # celeryconfig reads the environment when it is imported: only now, inside a command,
    # where a bad setting is reported as one line.
    from celeryconfig import celery_settings

    app = Celery("reqworker", set_as_current=False)
    app.conf.update(celery_settings(settings or Settings.from_env()))
    return app
