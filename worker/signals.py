"""Celery signal receivers: start-up checks, per-process set-up, log format, metrics."""

from __future__ import annotations

import logging
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
from worker.profiles import load_profiles
from worker.runtime import reset, runtime
from worker.settings import Settings
from worker.startup import check_visibility

log = logging.getLogger("reqworker.worker")


@worker_init.connect
def _check_before_start(**_: Any) -> None:
    settings = Settings.from_env()
    check_visibility(settings, load_profiles(settings.apis_path))


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
        serve(config, Settings.from_env())
