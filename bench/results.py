"""bench/RESULTS.md in sections: each script owns the text between its two markers.

A script rewrites only its own section, ``<!-- NAME:start -->`` to ``<!-- NAME:end -->``;
everything outside the markers (the title, hand-written notes, the other scripts'
sections) is kept as it is. A section not in the file yet is appended at its end.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The default results file.
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = ("# Benchmarks\n\nEach section between `<!-- NAME:start -->` and `<!-- NAME:end -->` is "
         "rewritten by `bench/NAME.py`; the text outside the markers is written by hand and kept.\n")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(document: str, name: str, text: str) -> str:
    """``document`` with section ``name`` holding ``text`` (appended when absent)."""
    start, end = markers(name)
    block = f"{start}\n{text.strip()}\n{end}"
    head, found, rest = document.partition(start)
    if found:
        _, closed, tail = rest.partition(end)
        if not closed:
            raise ValueError(f"{start} has no {end} after it")
        return head + block + tail
    return f"{document.rstrip()}\n\n{block}\n".lstrip()


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Rewrite section ``name`` of ``path`` in place (a whole new file replaces the old at once)."""
    old = path.read_text(encoding="utf-8") if path.exists() else TITLE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(replace_section(old, name, text), encoding="utf-8")
    os.replace(tmp, path)
