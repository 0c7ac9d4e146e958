"""Reading deploy/: its env files and its profiles, as the deploy tests and the Redis client tests do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support import REPO
from worker.profiles import load_profiles

ROOT = Path(REPO)
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "reqworker.env.example"


def env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """NAME=value lines; with ``commented``, also the ``#NAME=value`` lines offered as options."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if commented and re.match(r"^#[A-Z][A-Z0-9_]*=", line):
            line = line[1:]
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}: bad line {raw!r}"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{path.name}: bad line {raw!r}"
        why = f"{path.name}: {name}: no quotes or spaces (systemd and compose read them differently)"
        assert value == value.strip(), why
        assert not value.startswith(('"', "'")), why
        out[name] = value
    return out


def example_env() -> dict[str, str]:
    return env_file(ENV_EXAMPLE)


def deploy_profiles() -> dict[str, Any]:
    return load_profiles(DEPLOY / "apis.toml", example_env())
