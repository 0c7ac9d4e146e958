"""The worker's Prometheus endpoint: its own counters, plus the fleet's state read at scrape time.

``reqworker worker --metrics-port PORT`` gives each worker a directory of its own for
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), emptied at start,
so the counters of every pool process (prefork children, or the one process of the
threads pool) are added up, and several workers on one host never mix their figures.
The pause, queue length and parked jobs are read from Redis when Prometheus scrapes.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from worker.keys import Keys
from worker.parking import parked_key
from worker.profiles import load_profiles
from worker.ratelimit import RateLimiter
from worker.redisconn import command_client
from worker.settings import Settings, SettingsError

log = logging.getLogger("reqworker.metrics")

PORT_ENV = "REQWORKER_METRICS_PORT"
ADDRESS_ENV = "REQWORKER_METRICS_ADDRESS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_ADDRESS = "127.0.0.1"

#: The gauges read at scrape time (the counters are in ``worker.metrics``).
PAUSED = "reqworker_paused_seconds"
RATE_LIMIT = "reqworker_rate_limit_per_second"
QUEUE_LENGTH = "reqworker_queue_length"
PARKED = "reqworker_parked_jobs"
FLEET_GAUGES = (PAUSED, RATE_LIMIT, QUEUE_LENGTH, PARKED)


@dataclass(frozen=True)
class MetricsConfig:
    """Where a worker serves its metrics; ``port`` None: it serves none."""

    port: int | None = None
    address: str = DEFAULT_ADDRESS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MetricsConfig:
        env = os.environ if env is None else env
        raw = env.get(PORT_ENV, "").strip()
        port = None
        if raw:
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise SettingsError(f"{PORT_ENV}={raw!r} is not a port number")
            port = int(raw)
        return cls(port, env.get(ADDRESS_ENV, "").strip() or DEFAULT_ADDRESS)


def check_port_free(config: MetricsConfig) -> None:
    """Raise ``SettingsError`` when the metrics port cannot be listened on (another worker has it)."""
    assert config.port is not None
    try:
        family = socket.AF_INET6 if ":" in config.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((config.address, config.port))
    except OSError as exc:
        raise SettingsError(f"cannot serve metrics on {config.address}:{config.port}: {exc.strerror}; "
                            "each worker on a host needs a port of its own") from None


def prepare_directory(port: int) -> Path:
    """This worker's multiprocess directory, emptied of an earlier run's figures."""
    path = Path(tempfile.gettempdir()) / f"reqworker-metrics-{os.getuid()}-{port}"
    path.mkdir(mode=0o700, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


class FleetCollector(Collector):
    """Gauges read from Redis at scrape time: each profile's pause, the queue, parked jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        profiles = load_profiles(settings.apis_path, with_secrets=False)
        self.profiles = sorted(profiles)
        self.rates = {name: p.rate_limit.per_second for name, p in profiles.items() if p.rate_limit}
        self.limiter = RateLimiter(command_client(settings.cache_url, settings),
                                   Keys(settings.key_prefix))
        self.broker = (command_client(settings.broker_url, settings)
                       if settings.broker_is_redis else None)

    def collect(self) -> Iterator[Metric]:
        limits = GaugeMetricFamily(RATE_LIMIT, "The profile's rate_limit (shared by the fleet), "
                                   "in requests per second", labels=["api"])
        for name, per_second in self.rates.items():
            limits.add_metric([name], per_second)
        yield limits
        try:
            paused = GaugeMetricFamily(PAUSED, "Seconds left of the profile's fleet-wide pause",
                                       labels=["api"])
            for name in self.profiles:
                paused.add_metric([name], self.limiter.pause_left(name))
            yield paused
            if self.broker is not None:
                queue = self.settings.queue
                pipe = self.broker.pipeline(transaction=False)
                pipe.llen(queue)
                pipe.zcard(parked_key(queue))
                length, parked = pipe.execute()
                yield _gauge(QUEUE_LENGTH, "Jobs ready on the broker queue", queue, length)
                yield _gauge(PARKED, "Jobs parked on the broker until their countdown ends", queue, parked)
        except redis.RedisError as exc:
            log.warning("metrics: cannot read Redis: %s", type(exc).__name__)


def _gauge(name: str, documentation: str, queue: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["queue"])
    gauge.add_metric([queue], value)
    return gauge


def serve(config: MetricsConfig, settings: Settings) -> None:
    """Serve /metrics in a thread of this (the worker's main) process."""
    assert config.port is not None
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    else:
        # Started without `reqworker worker`: right for the threads pool only.
        registry = REGISTRY
        log.warning("metrics: %s is not set, so a prefork pool's figures are missing; start "
                    "workers with `reqworker worker --metrics-port`", MULTIPROC_ENV)
    registry.register(FleetCollector(settings))
    start_http_server(config.port, config.address, registry=registry)
    log.info("metrics: serving Prometheus metrics at http://%s:%d/metrics", config.address, config.port)
