"""The ``reqworker`` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, BinaryIO, TextIO

import click
import redis
from kombu.exceptions import OperationalError as KombuOperationalError

from producer.authflow import auth_command
from producer.batches import BatchNotFound
from producer.client import Batch, Client, Counts, EnqueueInterrupted, SubmitReport
from producer.enqueue import EnqueueBusy
from producer.jsonl import read_jobs, read_lines
from producer.progress import ProgressView, ResultsBar, bar_text
from worker.jobs import JobError
from worker.preflight import ServiceError, check_redis, redis_failure, startup_checks
from worker.profiles import ProfileError, load_profiles
from worker.redisconn import command_client
from worker.settings import Settings, SettingsError, redact_url
from worker.startup import StartupError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one clear line and the documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ProfileError, SettingsError, JobError, BatchNotFound, StartupError) as exc:
            click.echo(f"reqworker: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except EnqueueInterrupted as exc:
            _print_counts(exc.counts, sys.stderr)
            click.echo(f"reqworker: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except EnqueueBusy as exc:
            click.echo(f"reqworker: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except ServiceError as exc:
            click.echo(f"reqworker: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except redis.RedisError as exc:
            click.echo(f"reqworker: {_where(exc)}", err=True)
            sys.exit(EXIT_FAILED)
        except KombuOperationalError as exc:
            # a broker that is not Redis (RabbitMQ) is down or refuses the login
            url = redact_url(Settings.from_env().broker_url)
            click.echo(f"reqworker: broker at {url}: {type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper


def _where(exc: redis.RedisError) -> str:
    """A Redis failure with the Redis it came from: the deployment's only one, or each of them."""
    urls = sorted(set(Settings.from_env().redis_urls().values()))
    return redis_failure(" or ".join(urls), exc)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reqworker", prog_name="reqworker")
def main() -> None:
    """Run HTTP API requests as background jobs on Celery workers.

    Configuration comes from the environment: REQWORKER_REDIS_URL (default
    redis://127.0.0.1:6379/0; sentinel://… with REQWORKER_SENTINEL_MASTER),
    REQWORKER_BROKER_URL, REQWORKER_RESULT_BACKEND, REQWORKER_CACHE_URL, and
    REQWORKER_APIS (default ./apis.toml) for the API profiles.

    Exit codes: 0 success; 1 some jobs failed or a command failed (Redis down, full,
    or refusing the password); 2 bad usage or input.
    """


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("-c", "--concurrency", type=click.IntRange(1, 512), default=8, show_default=True,
              help="Jobs run at once by this worker.")
@click.option("--pool", type=click.Choice(["threads", "prefork"]), default="threads",
              show_default=True,
              help="threads: --concurrency 8 for a fast API, 64 for a slow one (100 ms or more an "
                   "answer), one worker per core; prefork isolates jobs.")
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
@_friendly
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


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[ProgressView | None]:
    view = ProgressView(total) if enabled else None
    try:
        yield view
    finally:
        if view is not None:
            view.close()


def _follow(batch: Batch, total: int) -> Counts:
    """Wait for a batch to finish, showing its progress on stderr; returns the final counts."""
    with _progress(total, True) as view:
        return batch.wait(on_progress=view.update if view else None)


@main.command()
@click.argument("file", type=click.File("rb"))
@click.option("--name", default=None, help="A name for the batch, shown by status.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until every job has finished.")
@click.option("--resume", "resume_id", default=None, metavar="BATCH_ID",
              help="Go on with an interrupted enqueue of FILE into this batch.")
@_friendly
def enqueue(file: BinaryIO, name: str | None, wait_: bool, resume_id: str | None) -> None:
    """Enqueue the jobs in FILE (JSON Lines; - for stdin) as one batch; print its id.

    Lines that break the job contract are refused with their line number and the
    field at fault; the rest of the batch goes on (exit code 2 if any were refused).
    With --resume BATCH_ID, only the lines of FILE not yet published to that batch
    go out; each line published before must be the same job.
    """
    client = Client.from_env()
    bar = sys.stderr.isatty()
    lines = _CountingLines(file)

    def shown(accepted: int, rejected: int) -> None:
        if bar:
            click.echo(f"\r{lines.bar()}enqueued {accepted}, refused {rejected}\033[K",
                       err=True, nl=False)

    try:
        report: SubmitReport
        jobs = read_jobs(read_lines(lines))
        if resume_id:
            report = client.resume(resume_id, jobs, on_progress=shown)
        else:
            report = client.submit_numbered(jobs, name=name, on_progress=shown)
    finally:
        if bar:
            click.echo("", err=True)
    for rejected in report.rejected:
        click.echo(f"refused {rejected}", err=True)
    click.echo(report.batch.id)
    more = " more" if resume_id else ""
    click.echo(f"batch {report.batch.id}: {report.accepted}{more} jobs enqueued, "
               f"{len(report.rejected)} lines refused", err=True)
    code = EXIT_USAGE if report.rejected else EXIT_OK
    if wait_:
        counts = _follow(report.batch, report.accepted)
        _print_counts(counts, sys.stderr)
        if counts.failed and code == EXIT_OK:
            code = EXIT_FAILED
    sys.exit(code)


class _CountingLines:
    """An input read line by line, counting how much of it has been read, for a progress bar."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.read = 0
        try:
            self.size: int | None = os.fstat(file.fileno()).st_size or None
        except (OSError, ValueError):
            self.size = None  # a pipe: no end known in advance

    def readline(self, limit: int = -1) -> bytes:
        line = self.file.readline(limit)
        self.read += len(line)
        return line

    def bar(self) -> str:
        return bar_text(self.read / self.size) if self.size else ""


def _print_counts(counts: Counts, stream: TextIO) -> None:
    for state, number in counts.as_dict().items():
        click.echo(f"{state:<10} {number}", file=stream)


@main.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@_friendly
def status(batch_id: str, as_json: bool) -> None:
    """Counts of a batch's jobs by state: pending, waiting, retrying, succeeded, failed.

    Waiting jobs wait for pacing (the rate budget, a concurrency slot, a pause);
    retrying ones for a backoff after a failure. An enqueue that stopped before the
    end of its input shows as interrupted at a line.
    """
    client = Client.from_env()
    batch = client.batch(batch_id)
    facts = batch.facts
    counts = Counts.from_facts(facts)
    enqueuing = client.store.enqueuing(batch_id, facts)
    if as_json:
        out = {"batch_id": batch_id, "name": facts.get("name") or None, **counts.as_dict(),
               "refused": int(facts.get("rejected", 0)),
               "enqueuing": not enqueuing.done and not enqueuing.interrupted,
               "published": enqueuing.published,
               "interrupted_at": enqueuing.next_line if enqueuing.interrupted else None,
               "stopped": enqueuing.stopped or None}
        click.echo(json.dumps(out))
        return
    if facts.get("name"):
        click.echo(f"name       {facts['name']}")
    _print_counts(counts, sys.stdout)
    click.echo(f"refused    {facts.get('rejected', 0)}")
    note = enqueuing.describe(batch_id)
    if note:
        click.echo(note)
    elif not enqueuing.done:
        click.echo(f"(still being enqueued: {enqueuing.published} jobs so far)")


@main.command()
@click.argument("batch_id")
@_friendly
def watch(batch_id: str) -> None:
    """Live progress of a batch until it ends: a bar on a terminal, plain lines when piped.

    Exit code 1 when any job failed, or when the batch's enqueue was interrupted.
    """
    batch = Client.from_env().batch(batch_id)
    counts = _follow(batch, batch.status().total)
    _print_counts(counts, sys.stdout)
    sys.exit(EXIT_FAILED if counts.failed else EXIT_OK)


@main.command()
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many of the most recent batches.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per batch.")
@_friendly
def batches(limit: int, as_json: bool) -> None:
    """The most recent batches, newest first: id, name, created, state and counts."""
    found = Client.from_env().recent_batches(limit)
    if as_json:
        for summary in found:
            click.echo(json.dumps(summary.as_dict()))
        return
    if not found:
        click.echo("no batches", err=True)
        return
    names = list(found[0].counts.as_dict())
    click.echo(f"{'batch':<32}  {'created (UTC)':<19}  {'state':<9}  "
               + "  ".join(f"{n:>9}" for n in names) + "  name")
    for summary in found:
        counts = summary.counts.as_dict()
        click.echo(f"{summary.batch_id:<32}  {summary.created_text():<19}  {summary.state:<9}  "
                   + "  ".join(f"{counts[n]:>9}" for n in names) + f"  {summary.name}")


@main.command()
@click.argument("batch_id")
@_friendly
def recount(batch_id: str) -> None:
    """Rebuild a batch's counters from its stored results, and print them.

    Workers count each job as they store its result, and `watch` checks the stored
    results when counts stand still; this is the same repair, by hand.
    """
    batch = Client.from_env().batch(batch_id)
    before = batch.status()
    after = batch.recount()
    _print_counts(after, sys.stdout)
    if after != before:
        changed = ", ".join(f"{k} {before.as_dict()[k]} -> {v}"
                            for k, v in after.as_dict().items() if before.as_dict()[k] != v)
        click.echo(f"recounted: {changed}", err=True)


@main.command("retry-failed")
@click.argument("batch_id")
@click.option("--name", default=None, help="A name for the new batch.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until every job has finished.")
@_friendly
def retry_failed(batch_id: str, name: str | None, wait_: bool) -> None:
    """Enqueue a batch's failed jobs again as a new batch; print the new batch's id."""
    client = Client.from_env()
    report = client.retry_failed(batch_id, name=name)
    click.echo(report.batch.id)
    click.echo(f"batch {report.batch.id}: {report.accepted} failed jobs of {batch_id} "
               "enqueued again", err=True)
    if wait_:
        counts = _follow(report.batch, report.accepted)
        _print_counts(counts, sys.stderr)
        sys.exit(EXIT_FAILED if counts.failed else EXIT_OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per profile.")
@_friendly
def limits(as_json: bool) -> None:
    """Each profile's shared rate budget, concurrency cap and any pause in force."""
    from worker.keys import Keys
    from worker.ratelimit import RateLimiter

    settings = Settings.from_env()
    profiles = load_profiles(settings.apis_path, with_secrets=False)
    limiter = RateLimiter(command_client(settings.cache_url, settings), Keys(settings.key_prefix))
    for profile in profiles.values():
        state = limiter.describe(profile)
        if as_json:
            click.echo(json.dumps(state))
            continue
        rate = f"{state['rate']} (burst {state['burst']}), {state['available']} available now" \
            if state["rate"] else "no rate limit"
        cap = f", {state['in_flight']}/{state['concurrency']} in flight" \
            if state["concurrency"] else ""
        pause = f", PAUSED for {state['paused_s']:.1f} s" if state["paused_s"] else ""
        adaptive = ", adaptive" if state["adaptive"] else ""
        click.echo(f"{profile.name}: {rate}{cap}{pause}{adaptive}")


@main.command()
@click.argument("batch_id")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              help="Write the results here instead of stdout.")
@click.option("--failed", "failed_only", is_flag=True, help="Only the failed jobs.")
@_friendly
def results(batch_id: str, output: TextIO, failed_only: bool) -> None:
    """One JSON result per line for each finished job of a batch.

    Exit code 1 when any job failed; jobs not finished yet are counted on stderr.
    """
    client = Client.from_env()
    batch = client.batch(batch_id)
    facts = batch.facts
    total = int(facts.get("total", 0))
    # A bar when the results go to a file (-o) and a person watches the terminal.
    to_file = getattr(output, "name", "<stdout>") != "<stdout>" and not output.isatty()
    expected = int(facts.get("failed", 0)) if failed_only else total + int(facts.get("duplicates", 0))
    bar = ResultsBar(expected, sys.stderr) if to_file and sys.stderr.isatty() else None
    written = failed = 0
    for record in batch.results(failed_only=failed_only):
        output.write(json.dumps(record) + "\n")
        written += 1
        failed += not record.get("ok")
        if bar is not None:
            bar.update(written)
    output.flush()
    if bar is not None:
        bar.update(written, last=True)
    if not failed_only and written < total:
        click.echo(f"{total - written} of {total} jobs have not finished yet", err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _pairs(values: tuple[str, ...], sep: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, found, rest = value.partition(sep)
        if not found or not name.strip():
            raise click.BadParameter(f"{value!r} is not {what}")
        out[name.strip()] = rest.strip() if sep == ":" else rest
    return out


@main.command()
@click.argument("method")
@click.argument("path")
@click.option("--api", required=True, help="The profile in apis.toml.")
@click.option("-p", "--param", "params", multiple=True, help="Query parameter NAME=VALUE.")
@click.option("-H", "--header", "headers", multiple=True, help="Header 'Name: value'.")
@click.option("--json", "json_body", default=None, help="A JSON request body.")
@click.option("--data", default=None, help="A raw request body.")
@click.option("--no-cache", is_flag=True, help="Do not use the shared GET cache.")
@click.option("--refresh", is_flag=True, help="Bypass the cache and store the fresh answer.")
@click.option("--key", default=None, help="Your own label, carried into the result.")
@click.option("--retry-unsafe", is_flag=True, help="Retry a POST/PATCH after an ambiguous error.")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="Give up waiting after this many seconds (exit 1).")
@_friendly
def request(method: str, path: str, api: str, params: tuple[str, ...], headers: tuple[str, ...],
            json_body: str | None, data: str | None, no_cache: bool, refresh: bool,
            key: str | None, retry_unsafe: bool, timeout_s: float | None) -> None:
    """Run one job (METHOD PATH against --api), wait for it and print its result.

    PATH is joined to the profile's base_url; an absolute URL must lie under it.
    """
    job: dict[str, Any] = {
        "api": api, "method": method, "params": _pairs(params, "=", "NAME=VALUE"),
        "headers": _pairs(headers, ":", "'Name: value'"), "cache": not no_cache,
        "refresh": refresh, "key": key, "retry_unsafe": retry_unsafe, "data": data,
    }
    job["url" if "://" in path else "path"] = path
    if json_body is not None:
        try:
            job["json"] = json.loads(json_body)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
    client = Client.from_env()
    batch, _ = client.submit(job, name="request")
    try:
        batch.wait(poll_s=0.1, timeout_s=timeout_s)
    except TimeoutError as exc:
        click.echo(f"reqworker: {exc} (is a `reqworker worker` running?)", err=True)
        sys.exit(EXIT_FAILED)
    record = next(batch.results())
    click.echo(json.dumps(record, indent=2))
    sys.exit(EXIT_OK if record.get("ok") else EXIT_FAILED)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback wants basic auth.")
@_friendly
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


@main.command()
@click.option("--jobs", "job_count", type=click.IntRange(10, 100_000), default=2000,
              show_default=True, help="How many jobs the demo sync enqueues.")
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@_friendly
def demo(job_count: int, no_flower: bool) -> None:
    """Run the whole system on this machine, with nothing installed beforehand.

    A private Redis, a local API with OAuth, a rate limit and trouble on purpose, two
    workers and Flower; a bulk sync with live progress, then a summary. Everything it
    started stops at the end, and on Ctrl-C. The results are kept in
    ./reqworker-demo-results.jsonl.
    """
    from producer.demo import run_demo

    sys.exit(run_demo(job_count, flower=not no_flower))


@main.command("dead-letters")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many of the newest to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, message included.")
@_friendly
def dead_letters(limit: int, as_json: bool) -> None:
    """Messages on the job queue that no worker could run, set aside instead.

    A message that cannot be decoded, or is no reqworker job, never stops a worker:
    it is kept here (the newest 1,000, for 7 days) with the reason. Only a Redis
    broker keeps them.
    """
    from worker.deadletters import DeadLetters

    settings = Settings.from_env()
    if not settings.broker_is_redis:
        click.echo("reqworker: dead letters are kept only on a Redis broker", err=True)
        sys.exit(EXIT_USAGE)
    total, entries = DeadLetters(command_client(settings.broker_url, settings)).read(settings.queue, limit)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    click.echo(f"{total} messages set aside on queue {settings.queue}" + (":" if entries else ""))
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["time"]))
        click.echo(f"{when}Z  {entry['size']:>8} bytes  {entry['reason']}")


main.add_command(auth_command)


if __name__ == "__main__":
    main()
