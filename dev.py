#!/usr/bin/env python3
"""Set-up in one command, with nothing but Python 3.11+: `python3 dev.py demo` or `python3 dev.py test`.

Creates ./.venv, installs reqworker into it with the pinned versions of constraints.txt
(again only when pyproject.toml or constraints.txt changed),
then runs the demo, or the linter, the type checker and the whole test suite.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
CONSTRAINTS = ROOT / "constraints.txt"


def ensure_venv(extra: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"reqworker needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + CONSTRAINTS.read_bytes()
                            + extra.encode()).hexdigest()
    stamp = VENV / ".reqworker-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    print(f"installing reqworker[{extra}] into {VENV}", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    # The versions the tests pass with (constraints.txt), not whatever is newest today.
    subprocess.run([*pip, "-c", str(CONSTRAINTS), "-e", f".[{extra}]"], check=True, cwd=ROOT)
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "demo":
        ensure_venv("local")
        return subprocess.call([str(BIN / "reqworker"), "demo", *argv[1:]], cwd=ROOT)
    if command == "test":
        ensure_venv("dev")
        lint = subprocess.call([str(BIN / "ruff"), "check", "."], cwd=ROOT)
        types = subprocess.call([str(BIN / "mypy")], cwd=ROOT)
        tests = subprocess.call([str(BIN / "python"), "-m", "pytest", *argv[1:]], cwd=ROOT)
        return tests or lint or types
    print(__doc__.strip().splitlines()[0])
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
