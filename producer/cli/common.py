"""What every command shares: errors a user can fix as one line and an exit code, progress, counts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TextIO

import click
import redis
from kombu.exceptions import OperationalError as KombuOperationalError

from producer.batches import BatchNotFound
from producer.client import Batch, Counts, EnqueueInterrupted
from producer.enqueue import EnqueueBusy
from producer.progress import ProgressView
from worker.jobs import JobError
from worker.preflight import ServiceError, redis_failure
from worker.profiles import ProfileError
from worker.settings import Settings, SettingsError, redact_url
from worker.startup import StartupError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one clear line and the documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ProfileError, SettingsError, JobError, BatchNotFound, StartupError) as exc:
            click.echo(f"reqworker: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except EnqueueInterrupted as exc:
            print_counts(exc.counts, sys.stderr)
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


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[ProgressView | None]:
    view = ProgressView(total) if enabled else None
    try:
        yield view
    finally:
        if view is not None:
            view.close()


def follow(batch: Batch, total: int) -> Counts:
    """Wait for a batch to finish, showing its progress on stderr; returns the final counts."""
    with _progress(total, True) as view:
        return batch.wait(on_progress=view.update if view else None)


def print_counts(counts: Counts, stream: TextIO) -> None:
    for state, number in counts.as_dict().items():
        click.echo(f"{state:<10} {number}", file=stream)
