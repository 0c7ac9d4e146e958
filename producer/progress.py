"""Showing a batch's progress: a live bar on a terminal, plain lines when piped."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from producer.client import Counts


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
        text = (f"{counts.done}/{total} done, {counts.failed} failed, {counts.retrying} retrying,"
                f" {rate:,.1f} jobs/s, eta {eta}")
        if self.live:
            width = 24
            filled = int(width * counts.done / total) if total else width
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {text}\033[K")
            self.stream.flush()
        elif now - self._last_line >= self.every_s or counts.finished:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_line = now

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
