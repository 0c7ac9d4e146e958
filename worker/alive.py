"""A liveness file for container probes that asks neither the broker nor other workers.

The worker's main process touches ``REQWORKER_ALIVE_FILE`` (``Settings.alive_file``,
default ``/tmp/reqworker-alive``) every few seconds from a
thread of its own, from start-up until it exits. A probe runs
``python -m worker.alive`` in the container: it succeeds while the file is fresh.
A Redis outage therefore never fails the probe (the worker reconnects by itself),
and no probe sends anything to the fleet, unlike ``celery inspect ping``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

from worker.settings import process_settings

#: Seconds between touches of the file.
EVERY_S = 5.0
#: A file older than this fails the probe.
DEFAULT_MAX_AGE_S = 60.0


def start_heartbeat(path: Path, every_s: float = EVERY_S) -> threading.Thread:
    """Touch ``path`` now and every ``every_s`` seconds while this process lives."""

    def beat() -> None:
        while True:
            with suppress(OSError):  # a full or read-only /tmp: the probe will say so
                path.touch()
            time.sleep(every_s)

    path.touch()
    thread = threading.Thread(target=beat, name="reqworker-alive", daemon=True)
    thread.start()
    return thread


def is_fresh(path: Path, max_age_s: float, now_s: float | None = None) -> bool:
    try:
        age_s = (time.time() if now_s is None else now_s) - path.stat().st_mtime
    except OSError:
        return False
    return age_s <= max_age_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.alive",
                                     description="Exit 0 while this container's worker is alive.")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S,
                        help="seconds since the worker's last heartbeat (default %(default)s)")
    args = parser.parse_args(argv)
    path = Path(process_settings().alive_file)
    if is_fresh(path, args.max_age):
        return 0
    print(f"no heartbeat in {path} for {args.max_age:g} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
