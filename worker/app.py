"""The Celery app of the workers, configured from ``celeryconfig``.

``celery -A worker.app worker`` starts a worker exactly as ``reqworker worker`` does:
the same settings, and the same start-up checks (``worker.signals``).
"""

from __future__ import annotations

import sys

from celery import Celery

from worker.settings import Settings, SettingsError

try:
    Settings.from_env()  # what celeryconfig reads: a bad setting is one line, not a traceback
except SettingsError as exc:
    print(f"reqworker: {exc}", file=sys.stderr)
    sys.exit(2)  # as `reqworker worker` does for a bad configuration

app = Celery("reqworker")
app.config_from_object("celeryconfig")

import worker.signals  # noqa: E402,F401  (connects the start-up checks before the worker starts)
