"""The liveness heartbeat: a fresh file passes the probe, a stale or missing one fails it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support import eventually
from worker.alive import is_fresh, main, start_heartbeat


def test_a_heartbeat_keeps_its_file_fresh(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    start_heartbeat(path, every_s=0.05)
    old = time.time() - 600
    os.utime(path, (old, old))
    eventually(lambda: is_fresh(path, max_age_s=5), within_s=30, what="the heartbeat")


def test_the_probe_fails_on_a_stale_or_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alive"
    monkeypatch.setenv("REQWORKER_ALIVE_FILE", str(path))
    assert main(["--max-age", "60"]) == 1
    assert str(path) in capsys.readouterr().err
    path.touch()
    assert main(["--max-age", "60"]) == 0
    old = time.time() - 120
    os.utime(path, (old, old))
    assert main(["--max-age", "60"]) == 1
