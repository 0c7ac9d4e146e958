"""Celery signal receivers: start-up checks and per-process set-up."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from celery.signals import worker_init, worker_process_init

from worker.alive import start_heartbeat
from worker.preflight import EXIT_CONFIG, EXIT_SERVICE, ServiceError, startup_checks
from worker.profiles import ProfileError
from worker.runtime import reset, runtime
from worker.settings import Settings, SettingsError
from worker.startup import StartupError

log = logging.getLogger("reqworker.worker")


@worker_init.connect
def _check_before_start(**_: Any) -> None:
    # `celery -A worker.app worker` comes here without `reqworker worker`'s own checks:
    # the same refusal, as one line and the same exit status.
    try:
        settings = Settings.from_env()
        startup_checks(settings)
    except (StartupError, ProfileError, SettingsError) as exc:
        print(f"reqworker: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG)
    except ServiceError as exc:
        print(f"reqworker: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SERVICE)
    # For a container's liveness probe (python -m worker.alive): no broker, no broadcast.
    start_heartbeat(Path(settings.alive_file))


@worker_process_init.connect
def _build_after_fork(**_: Any) -> None:
    reset()
    rt = runtime()
    log.info("reqworker process ready: profiles %s", ", ".join(sorted(rt.profiles)))
