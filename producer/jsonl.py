"""Reading jobs from JSON Lines: one job per line, blank lines skipped.

Whatever a line holds (bytes that are not UTF-8, JSON nested 100,000 deep, a number of
5,000 digits, a line of a gigabyte), it is that line that is refused, with its number;
the rest of the batch goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from worker.jobs import JobError

#: The longest line read as a job; a longer one is skipped (never held whole) and refused.
MAX_LINE_BYTES = 1024 * 1024
_BOM = "\ufeff"


class Readable(Protocol):
    def readline(self, limit: int = -1, /) -> bytes: ...


def read_lines(stream: Readable, limit: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """The lines of a binary stream; None for a line longer than ``limit`` bytes."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # skip the rest of the line a piece at a time
                rest = stream.readline(limit)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
        else:
            yield line


def read_jobs(lines: Iterable[str | bytes | None]) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's number and its decoded object, or a ``JobError`` saying why not.

    ``lines`` is text, or bytes (from ``read_lines``, where None is a line too long).
    """
    for number, line in enumerate(lines, start=1):
        if line is None:
            yield number, JobError("", f"the line is longer than {MAX_LINE_BYTES} bytes")
            continue
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, JobError("", f"not UTF-8 text: byte 0x{line[exc.start]:02x} at "
                                           f"column {exc.start + 1}")
                continue
        text = (line.removeprefix(_BOM) if number == 1 else line).strip()
        if not text:
            continue
        yield number, _decode(text)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return JobError("", f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return JobError("", "not a job: JSON nested too deeply")
    except ValueError as exc:  # Python refuses integers of more than 4,300 digits
        return JobError("", f"not a job: {exc}")
