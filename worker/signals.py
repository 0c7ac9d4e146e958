"""Celery signal receivers: start-up checks, per-process set-up, log format, metrics."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    worker_init,
    worker_process_init,
    worker_ready,
)

from worker import logformat
from worker.alive import start_heartbeat
from worker.preflight import EXIT_CONFIG, EXIT_SERVICE, ServiceError, startup_checks
from worker.profiles import ProfileError
from worker.runtime import reset, runtime
from worker.settings import SettingsError, process_settings
from worker.startup import StartupError

log = logging.getLogger("reqworker.worker")


@worker_init.connect
def _check_before_start(**_: Any) -> None:
    # `celery -A worker.app worker` comes here without `reqworker worker`'s own checks:
    # the same refusal, as one line and the same exit status.
    try:
        settings = process_settings()  # read when Celery configured the app
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


@celeryd_init.connect
def _log_from_the_start(**_: Any) -> None:
    # Before Celery's own set-up, so its first warnings are in the chosen format too.
    logformat.install(logformat.log_format())


@after_setup_logger.connect
@after_setup_task_logger.connect
def _format_logs(logger: logging.Logger, **_: Any) -> None:
    from celery.utils.log import get_multiprocessing_logger

    fmt = logformat.log_format()
    for each in (logger, get_multiprocessing_logger()):
        if each is not None:
            logformat.apply(each, fmt)


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    from worker.metricserver import MetricsConfig, serve

    config = MetricsConfig.from_env()
    if config.port is not None:
        serve(config, process_settings())
