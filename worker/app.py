"""The Celery app of the workers, configured from ``celeryconfig``."""

from __future__ import annotations

from celery import Celery

from worker.resultstore import guarded

app = Celery("reqworker")
app.config_from_object("celeryconfig")
# A late RETRY never replaces a finished job's result (see worker.resultstore).
app.conf.result_backend = guarded(str(app.conf.result_backend))
app.conf.imports = ("worker.tasks",)

import worker.signals  # noqa: E402,F401  (connects the start-up checks before the worker starts)
