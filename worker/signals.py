"""Celery signal receivers: start-up checks and per-process set-up."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_process_init

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
