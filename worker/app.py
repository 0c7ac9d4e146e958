"""The Celery app of the workers, configured from ``celeryconfig``.

``celery -A worker.app worker`` starts a worker exactly as ``reqworker worker`` does:
the same settings, and the same start-up checks (``worker.signals``).
"""

from __future__ import annotations

from celery import Celery

app = Celery("reqworker")
app.config_from_object("celeryconfig")

import worker.signals  # noqa: E402,F401  (connects the start-up checks before the worker starts)
