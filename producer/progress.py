"""Showing a batch's progress: a live bar on a terminal, plain lines when piped."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from producer.client import Counts


def draw_bar(fraction: float, width: int = 24) -> str:
    """A text progress bar such as ``[######------]`` for ``fraction`` (0 to 1) done."""
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return f"[{'#' * filled}{'-' * (width - filled)}]"


class ProgressView:
    """Writes progress to ``stream``: redrawn in place on a terminal, a line at a time else."""

    def __init__(self, total: int, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.live = self.stream.isatty()
        self.every_s = every_s
        self._started = time.monotonic()
        self._last_line = 0.0

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        total = max(self.total, counts.total)
        elapsed = now - self._started
        rate = counts.done / elapsed if elapsed > 0 else 0.0
        left = total - counts.done
        eta = f"{left / rate:,.0f}s" if rate > 0 and left else "-"
        text = (f"{counts.done}/{total} done, {counts.failed} failed, {counts.waiting} waiting,"
                f" {counts.retrying} retrying, {rate:,.1f} jobs/s, eta {eta}")
        if self.live:
            self.stream.write(f"\r{draw_bar(counts.done / total if total else 1.0)} {text}\033[K")
            self.stream.flush()
        elif now - self._last_line >= self.every_s or counts.finished:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_line = now

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
