"""A test-only hook: stop this worker dead at a named point of a job's life.

``REQWORKER_TEST_CRASH_AT=after-store`` makes the worker kill itself (SIGKILL, as
``kill -9`` would) right after Celery stored a job's result and before the batch
counted it, so the tests can make that crash happen exactly there, not by timing.
Unset (always, outside the tests) it does nothing.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("reqworker.crashpoint")


def crash_point(name: str, job_id: str) -> None:
    """Kill this process outright if the tests asked for a crash at ``name``."""
    if os.environ.get("REQWORKER_TEST_CRASH_AT") == name:
        log.warning("crash point %s reached by job %s: killing this worker", name, job_id)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
