"""Stopping a child started in a process group of its own, and everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import suppress


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group ``proc`` leads (nothing if it is gone)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the group, wait up to ``grace_s``, then SIGKILL whatever is left of it."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    signal_group(proc, signal.SIGKILL)  # the process, or anything it left in its group
    proc.wait()
