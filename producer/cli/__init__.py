"""The ``reqworker`` command line: the ``main`` group; its commands are in the modules beside it.

- ``services``: ``worker``, ``flower``, ``demo``;
- ``submit``: ``enqueue``, ``retry-failed``, ``request``;
- ``reports``: ``status``, ``watch``, ``batches``, ``recount``, ``results``;
- ``fleet``: ``limits``, ``dead-letters``;
- ``auth`` is ``producer.authflow``'s.
"""

from __future__ import annotations

import click

from producer.authflow import auth_command
from producer.cli import fleet, reports, services, submit


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


for _command in (services.worker, services.flower, services.demo, submit.enqueue, submit.retry_failed,
                 submit.request, reports.status, reports.watch, reports.batches, reports.recount,
                 reports.results, fleet.limits, fleet.dead_letters, auth_command):
    main.add_command(_command)
