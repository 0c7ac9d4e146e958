"""Commands that enqueue jobs: ``enqueue``, ``retry-failed``, ``request``.

The enqueue path: nothing here loads the worker's dependencies (requests, requests-cache).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, BinaryIO

import click

from producer.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, follow, friendly, print_counts
from producer.client import Client, SubmitReport
from producer.jsonl import read_jobs, read_lines
from producer.progress import bar_text
from worker.settings import MAX_JOBS_PER_MESSAGE


@click.command()
@click.argument("file", type=click.File("rb"))
@click.option("--name", default=None, help="A name for the batch, shown by status.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until every job has finished.")
@click.option("--resume", "resume_id", default=None, metavar="BATCH_ID",
              help="Go on with an interrupted enqueue of FILE into this batch.")
@click.option("--per-message", type=click.IntRange(1, MAX_JOBS_PER_MESSAGE), default=None,
              metavar="N", help="Pack up to N jobs into one message (default: "
              "REQWORKER_JOBS_PER_MESSAGE, else 16; 1 sends each job alone). Only jobs of "
              "profiles without rate_limit, concurrency or adaptive_rate, and no POST/PATCH "
              "without retry_unsafe, share a message.")
@friendly
def enqueue(file: BinaryIO, name: str | None, wait_: bool, resume_id: str | None,
            per_message: int | None) -> None:
    """Enqueue the jobs in FILE (JSON Lines; - for stdin) as one batch; print its id.

    Lines that break the job contract are refused with their line number and the
    field at fault; the rest of the batch goes on (exit code 2 if any were refused).
    With --resume BATCH_ID, only the lines of FILE not yet published to that batch
    go out; each line published before must be the same job.
    """
    client = Client.from_env()
    if per_message is not None:
        client.publisher.per_message = per_message
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
        counts = follow(report.batch, report.accepted)
        print_counts(counts, sys.stderr)
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


@click.command("retry-failed")
@click.argument("batch_id")
@click.option("--name", default=None, help="A name for the new batch.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until every job has finished.")
@friendly
def retry_failed(batch_id: str, name: str | None, wait_: bool) -> None:
    """Enqueue a batch's failed jobs again as a new batch; print the new batch's id."""
    client = Client.from_env()
    report = client.retry_failed(batch_id, name=name)
    click.echo(report.batch.id)
    click.echo(f"batch {report.batch.id}: {report.accepted} failed jobs of {batch_id} "
               "enqueued again", err=True)
    if wait_:
        counts = follow(report.batch, report.accepted)
        print_counts(counts, sys.stderr)
        sys.exit(EXIT_FAILED if counts.failed else EXIT_OK)


def _pairs(values: tuple[str, ...], sep: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, found, rest = value.partition(sep)
        if not found or not name.strip():
            raise click.BadParameter(f"{value!r} is not {what}")
        out[name.strip()] = rest.strip() if sep == ":" else rest
    return out


@click.command()
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
@friendly
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
