"""Commands that start something and keep it running: ``worker``, ``flower``, ``demo``."""

from __future__ import annotations

import os
import sys

import click

from producer.cli.common import friendly
from worker.preflight import check_redis, startup_checks
from worker.settings import Settings


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("-c", "--concurrency", type=click.IntRange(1, 512), default=8, show_default=True,
              help="Jobs run at once by this worker.")
@click.option("--pool", type=click.Choice(["threads", "prefork"]), default="threads",
              show_default=True,
              help="threads: --concurrency 8 for a fast API, 64 for a slow one (100 ms or more an "
                   "answer), one worker per core; a thread runs the jobs of a bundle (up to 16 "
                   "jobs a message, see REQWORKER_JOBS_PER_MESSAGE) one after another. prefork "
                   "isolates jobs in processes, at more memory and CPU per job.")
@click.option("-n", "--hostname", default=None, help="Worker node name (default: celery's).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              envvar="REQWORKER_LOG_FORMAT", help="json: one JSON object per line.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              envvar="REQWORKER_METRICS_PORT",
              help="Serve Prometheus metrics on this port (each worker on a host needs its own).")
@click.option("--metrics-address", default="127.0.0.1", show_default=True,
              envvar="REQWORKER_METRICS_ADDRESS", help="Address the metrics are served on.")
@click.argument("celery_options", nargs=-1, type=click.UNPROCESSED)
@friendly
def worker(concurrency: int, pool: str, hostname: str | None, loglevel: str, log_format: str,
           metrics_port: int | None, metrics_address: str, celery_options: tuple[str, ...]) -> None:
    """Start a Celery worker that runs request jobs.

    Options after `--` go to `celery worker` as they are, e.g.
    `reqworker worker -- --without-gossip --autoscale=16,2`.
    With --metrics-port it serves Prometheus metrics at /metrics.

    It refuses to start (exit 2) when a profile's longest retry countdown could
    outlast the broker's visibility timeout (REQWORKER_VISIBILITY_TIMEOUT), since such
    a job could run twice, and (exit 1) when a Redis it needs cannot be reached or
    refuses writes.
    """
    settings = Settings.from_env()
    startup_checks(settings)
    env = {**os.environ, "REQWORKER_LOG_FORMAT": log_format}
    env.update(_metrics_env(metrics_port, metrics_address))
    argv = [sys.executable, "-m", "celery", *(["--quiet"] if log_format == "json" else []),
            "-A", "worker.app", "worker", "-Q", settings.queue,
            "--concurrency", str(concurrency), "--pool", pool, "--loglevel", loglevel, "-E"]
    if hostname:
        argv += ["--hostname", hostname]
    argv += celery_options
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def _metrics_env(port: int | None, address: str) -> dict[str, str]:
    """The worker's metrics settings, with a multiprocess directory of its own; {} without a port."""
    from worker.metricserver import (
        ADDRESS_ENV,
        MULTIPROC_ENV,
        PORT_ENV,
        MetricsConfig,
        check_port_free,
        prepare_directory,
    )

    if port is None:
        return {}
    check_port_free(MetricsConfig(port, address))
    return {PORT_ENV: str(port), ADDRESS_ENV: address, MULTIPROC_ENV: str(prepare_directory(port))}


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback wants basic auth.")
@friendly
def flower(port: int, address: str) -> None:
    """Start Flower, Celery's monitor, for this app.

    Set REQWORKER_FLOWER_BASIC_AUTH=user:password to require a login (needed for its
    REST API, and to listen beyond loopback). Prometheus metrics are at /metrics.
    """
    from producer.flower import exec_flower, plan_flower

    check_redis(Settings.from_env())
    plan = plan_flower(port, address)
    for notice in plan.notices:
        click.echo(f"reqworker: {notice}", err=True)
    exec_flower(plan)


@click.command()
@click.option("--jobs", "job_count", type=click.IntRange(10, 100_000), default=2000,
              show_default=True, help="How many jobs the demo sync enqueues.")
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@friendly
def demo(job_count: int, no_flower: bool) -> None:
    """Run the whole system on this machine, with nothing installed beforehand.

    A private Redis, a local API with OAuth, a rate limit and trouble on purpose, two
    workers and Flower; a bulk sync with live progress, then a summary. Everything it
    started stops at the end, and on Ctrl-C. The results are kept in
    ./reqworker-demo-results.jsonl.
    """
    from producer.demo import run_demo

    sys.exit(run_demo(job_count, flower=not no_flower))
