"""Showing a batch's progress: a live bar on a terminal, plain lines when piped.

Speed and ETA come only from jobs seen finishing while watching: a watch attached to a
batch that is already 90 % done knows nothing of how fast that 90 % went.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

from producer.client import Counts

#: Seconds of recent progress the speed is measured over, so it follows the current pace.
SPEED_WINDOW_S = 30.0


def draw_bar(fraction: float, width: int = 24) -> str:
    """A text progress bar such as ``[######------]`` for ``fraction`` (0 to 1) done."""
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return f"[{'#' * filled}{'-' * (width - filled)}]"


def bar_text(fraction: float) -> str:
    """A bar with its percentage, e.g. ``[######------]  50% ``."""
    fraction = min(max(fraction, 0.0), 1.0)
    return f"{draw_bar(fraction)} {fraction:4.0%} "


class Speed:
    """Jobs per second, from what was seen finish while watching (times from a monotonic clock)."""

    def __init__(self, window_s: float = SPEED_WINDOW_S) -> None:
        self.window_s = window_s
        self._recent: deque[tuple[float, int]] = deque()
        self._first: tuple[float, int] | None = None

    def observe(self, now_s: float, done: int) -> None:
        if self._first is None:
            self._first = (now_s, done)
        self._recent.append((now_s, done))
        # Keep one sample at or before the window's start, so the window is always covered.
        while len(self._recent) > 2 and self._recent[1][0] <= now_s - self.window_s:
            self._recent.popleft()

    def rate(self) -> float | None:
        """Jobs per second over the recent window; None until some time has been watched."""
        if len(self._recent) < 2:
            return None
        (t0, d0), (t1, d1) = self._recent[0], self._recent[-1]
        if t1 <= t0:
            return None
        return max(d1 - d0, 0) / (t1 - t0)

    def watched(self) -> tuple[int, float]:
        """Jobs seen finishing, and seconds watched, since the first observation."""
        if self._first is None:
            return 0, 0.0
        (t0, d0), (t1, d1) = self._first, self._recent[-1]
        return max(d1 - d0, 0), t1 - t0


def describe(counts: Counts, total: int, rate: float | None) -> str:
    """``done/total done, each count, speed, eta`` for one progress line."""
    states = ", ".join(f"{name} {n}" for name, n in counts.as_dict().items()
                       if name != "total" and (n or name != "duplicates"))
    left = total - counts.done
    speed = f"{rate:,.1f} jobs/s" if rate is not None else "- jobs/s"
    eta = f"{left / rate:,.0f}s" if rate and left > 0 else "-"
    return f"{counts.done}/{total} done, {states}, {speed}, eta {eta}"


class ProgressView:
    """Writes progress to ``stream``: redrawn in place on a terminal, a line at a time else."""

    def __init__(self, total: int, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.live = self.stream.isatty()
        self.every_s = every_s
        self.speed = Speed()
        self._last_line: float | None = None

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        self.speed.observe(now, counts.done)
        total = max(self.total, counts.total)
        text = describe(counts, total, self.speed.rate())
        if self.live:
            self.stream.write(f"\r{draw_bar(counts.done / total if total else 1.0)} {text}\033[K")
            self.stream.flush()
        elif self._last_line is None or now - self._last_line >= self.every_s or counts.finished:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_line = now

    def summary(self) -> str:
        jobs, seconds = self.speed.watched()
        rate = f": {jobs / seconds:,.1f} jobs/s" if seconds > 0 else ""
        return f"{jobs} jobs finished while watching, in {seconds:,.1f} s{rate}"

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
        self.stream.write(self.summary() + "\n")
        self.stream.flush()


class ResultsBar:
    """A bar over results written to a file, redrawn on a terminal every ``every`` records."""

    def __init__(self, expected: int, stream: TextIO, every: int = 250) -> None:
        self.expected = expected
        self.stream = stream
        self.every = every

    def update(self, written: int, *, last: bool = False) -> None:
        if not last and written % self.every:
            return
        fraction = written / self.expected if self.expected else 1.0
        self.stream.write(f"\r{bar_text(fraction)}{written:,}/{self.expected:,} results\033[K")
        if last:
            self.stream.write("\n")
        self.stream.flush()
