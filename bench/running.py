"""How every bench script runs its sides and ends: its exit code, or 130 after a Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

T = TypeVar("T")


def run(main: Callable[[], int]) -> NoReturn:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything the bench started is stopped", file=sys.stderr)
        sys.exit(130)


def alternating(order: Sequence[T], repeat: int) -> Iterator[tuple[int, int, T]]:
    """``(repeat index, position, side)``: every side once per repeat, reversed every other time."""
    for n in range(repeat):
        for k, side in enumerate(order if n % 2 == 0 else order[::-1]):
            yield n, k, side


def publish(section: str, text: str, out: Path) -> int:
    """Write ``text`` as the script's section of ``out``, show it, and return exit code 0."""
    from bench.results import write_section

    write_section(section, text, out)
    print(f"\n{text}\nwritten to {out}")
    return 0
