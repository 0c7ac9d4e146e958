"""The Celery app of the workers (and of Flower), configured by ``celeryconfig``.

``celery -A worker.app worker`` starts a worker exactly as ``reqworker worker`` does:
the same settings, and the same start-up checks (``worker.signals``). Importing this
module reads nothing: Celery asks for the app's configuration as the worker starts,
and only then are the settings read from the environment, once for the process
(``worker.settings.process_settings``); a bad one is a line and exit 2.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from celeryconfig import celery_settings
from worker.settings import or_exit, process_settings

app = Celery("reqworker")


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    # The user's module (REQWORKER_CELERY_CONFIG) is read here too: its errors are one line.
    sender.config_from_object(or_exit(lambda: celery_settings(process_settings())))


import worker.signals  # noqa: E402,F401  (connects the start-up checks before the worker starts)
