"""The Celery app of the workers, configured from ``celeryconfig``."""

from __future__ import annotations

from celery import Celery

app = Celery("reqworker")
app.config_from_object("celeryconfig")
app.conf.imports = ("worker.tasks",)

import worker.signals  # noqa: E402,F401  (connects the start-up checks before the worker starts)
