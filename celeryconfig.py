"""Celery settings for reqworker, read from the environment (see worker.settings).

``REQWORKER_REDIS_URL`` is the one switch; ``REQWORKER_BROKER_URL``,
``REQWORKER_RESULT_BACKEND`` and ``REQWORKER_CACHE_URL`` override its parts; with
``sentinel://`` URLs, ``REQWORKER_SENTINEL_MASTER`` names the primary. The module
named in ``REQWORKER_CELERY_CONFIG`` adds the user's own Celery settings on top.
``celery_settings`` builds them from a ``Settings`` read at start-up and passed in (by
``worker.app`` for the workers, ``producer.celeryapp`` for producers), so a process can
talk to more than one deployment. Importing this module reads nothing.
"""

from __future__ import annotations

from typing import Any

from worker.redisurl import is_sentinel_url
from worker.resultstore import guarded
from worker.settings import Settings
from worker.usercelery import user_celery_settings


def _broker_transport(settings: Settings) -> str:
    """reqworker's kombu transport for a Redis broker, directly or through Sentinel."""
    if is_sentinel_url(settings.broker_url):
        return "worker.transport:SentinelTransport"
    return "worker.transport:Transport"


def _sentinel_options(settings: Settings, url: str) -> dict[str, Any]:
    """Transport options that name the primary, for a Sentinel URL."""
    return {"master_name": settings.sentinel_master} if is_sentinel_url(url) else {}


def celery_settings(settings: Settings) -> dict[str, Any]:
    """reqworker's Celery settings for ``settings``, with the user's module over them."""
    ours = _reqworker_settings(settings)
    ours.update(user_celery_settings(settings.celery_config))
    return ours


def _reqworker_settings(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        # A late RETRY never replaces a finished job's result (see worker.resultstore).
        "result_backend": guarded(settings.result_backend),
        # JSON only: a pickle from anyone who can write to the broker would run code here.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": settings.queue,
        "result_expires": settings.result_expires_s,
        "timezone": "UTC",
        "enable_utc": True,
        # Crash safety: a job is acknowledged only after it ran, a job whose worker
        # process died is handed back, and a worker holds no more waiting jobs than it
        # has slots, so a worker killed outright strands as few as possible.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        # A Redis blip, or a Sentinel failover, while a result is stored or read: try again
        # (with backoff, for a minute or so) rather than lose the result of a job that ran.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 20,
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            **_sentinel_options(settings, settings.result_backend),
        },
        # Countdowns (backoff, rate-budget waits) fire within 0.1 s of being due, not 1 s.
        "worker_timer_precision": 0.1,
        # Events, so Flower shows every job.
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        # Workers import the task; producers never do (they publish it by name).
        "imports": ("worker.tasks", "worker.bundles"),
        **_broker_settings(settings),
    }


def _broker_settings(settings: Settings) -> dict[str, Any]:
    """Where a message with a countdown waits: in the broker, never inside a worker."""
    if settings.broker_is_redis:
        return {
            # worker.transport parks delayed messages in Redis and renews the lease of
            # every message a worker holds, so the visibility timeout only decides how
            # soon a dead worker's jobs run elsewhere.
            "broker_transport": _broker_transport(settings),
            "broker_transport_options": {
                "visibility_timeout": settings.visibility_timeout_s,
                "unacked_restore_interval": 5,
                "unacked_restore_throttle": 1,
                "unacked_mutex_expire": settings.visibility_timeout_s,
                "job_queues": (settings.queue,),
                # reqworker sends no message priorities: one list per queue, not four, for
                # the consumers to watch and the parked-message mover to look at.
                "priority_steps": [0],
                **_sentinel_options(settings, settings.broker_url),
            },
        }
    # RabbitMQ: Celery's native delayed delivery parks countdowns in the broker. It needs
    # quorum queues behind a topic exchange.
    return {
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "broker_native_delayed_delivery_queue_type": "quorum",
    }

