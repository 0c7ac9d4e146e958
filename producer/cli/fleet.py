"""Commands about the fleet's shared state: ``limits``, ``dead-letters``."""

from __future__ import annotations

import json
import sys
import time

import click

from producer.cli.common import EXIT_USAGE, friendly
from worker.profiles import load_profiles
from worker.redisconn import command_client
from worker.settings import Settings


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per profile.")
@friendly
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


@click.command("dead-letters")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many of the newest to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, message included.")
@friendly
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
