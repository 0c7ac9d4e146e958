"""Turns at the machine: a test that counts requests per second counts while no other test runs.

The suite runs in several processes (pytest-xdist). On a 2-core machine, a test in one
process that starts workers or runs a few thousand jobs can hold the workers of a test in
another process off the CPU for a tenth of a second or more; requests their shared rate
budget spaced out then leave together, and an API that counts them per second sees more
than the budget. So every test runs in a shared turn, many at once, and a test's
``exclusive`` block waits until it is the only test running: it gives up its own shared
turn, keeps new ones from starting, waits for those of the other processes to end, and
takes its shared turn back afterwards.

The turns are ``flock`` locks on two files in a folder that every process of one run
opens.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The folder of the lock files, made by the run's first process (the xdist controller,
#: or the only one) and inherited by its workers.
FOLDER_ENV = "REQWORKER_TEST_TURNS"


class Turns:
    """One process's side of the turns kept in ``folder``."""

    def __init__(self, folder: Path) -> None:
        # Held while an exclusive turn is waited for or had: a shared turn is taken by
        # passing through it, so none starts meanwhile.
        self._gate = os.open(folder / "gate", os.O_RDWR | os.O_CREAT, 0o600)
        self._turn = os.open(folder / "turn", os.O_RDWR | os.O_CREAT, 0o600)
        self._shared = False

    def _take_shared(self) -> None:
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._turn, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        self._shared = True

    def _drop_shared(self) -> None:
        fcntl.flock(self._turn, fcntl.LOCK_UN)
        self._shared = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        """A turn among others: what a test runs in, with its fixtures."""
        self._take_shared()
        try:
            yield
        finally:
            if self._shared:
                self._drop_shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The only turn: its block runs while no other test does."""
        had_shared = self._shared
        if had_shared:
            self._drop_shared()
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._turn, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._turn, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
            if had_shared:
                self._take_shared()

    def close(self) -> None:
        os.close(self._gate)
        os.close(self._turn)
