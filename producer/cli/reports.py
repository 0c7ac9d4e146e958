"""Commands that read batches: ``status``, ``watch``, ``batches``, ``recount``, ``results``."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import click

from producer.cli.common import EXIT_FAILED, EXIT_OK, follow, friendly, print_counts
from producer.client import Client, Counts
from producer.progress import ResultsBar


@click.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@friendly
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
    print_counts(counts, sys.stdout)
    click.echo(f"refused    {facts.get('rejected', 0)}")
    note = enqueuing.describe(batch_id)
    if note:
        click.echo(note)
    elif not enqueuing.done:
        click.echo(f"(still being enqueued: {enqueuing.published} jobs so far)")


@click.command()
@click.argument("batch_id")
@friendly
def watch(batch_id: str) -> None:
    """Live progress of a batch until it ends: a bar on a terminal, plain lines when piped.

    Exit code 1 when any job failed, or when the batch's enqueue was interrupted.
    """
    batch = Client.from_env().batch(batch_id)
    counts = follow(batch, batch.status().total)
    print_counts(counts, sys.stdout)
    sys.exit(EXIT_FAILED if counts.failed else EXIT_OK)


@click.command()
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many of the most recent batches.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per batch.")
@friendly
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


@click.command()
@click.argument("batch_id")
@friendly
def recount(batch_id: str) -> None:
    """Rebuild a batch's counters from its stored results, and print them.

    Workers count each job as they store its result, and `watch` checks the stored
    results when counts stand still; this is the same repair, by hand.
    """
    batch = Client.from_env().batch(batch_id)
    before = batch.status()
    after = batch.recount()
    print_counts(after, sys.stdout)
    if after != before:
        changed = ", ".join(f"{k} {before.as_dict()[k]} -> {v}"
                            for k, v in after.as_dict().items() if before.as_dict()[k] != v)
        click.echo(f"recounted: {changed}", err=True)


@click.command()
@click.argument("batch_id")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              help="Write the results here instead of stdout.")
@click.option("--failed", "failed_only", is_flag=True, help="Only the failed jobs.")
@friendly
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
