"""Stopping children started in process groups of their own, and everything they started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from contextlib import suppress


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group ``proc`` leads (nothing if it is gone)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop_groups(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 20.0) -> None:
    """SIGTERM every group at once (their shutdowns overlap), wait up to ``grace_s`` in all,
    then SIGKILL whatever is left of each group."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0))
        signal_group(proc, signal.SIGKILL)  # the process, or anything it left in its group
        proc.wait()


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the group, wait up to ``grace_s``, then SIGKILL whatever is left of it."""
    stop_groups([proc], grace_s)
