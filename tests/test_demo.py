"""`reqworker demo` end to end: it runs from nothing, reports its outcome, and leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _demo_env(tmp_path: Path) -> dict[str, str]:
    """No REQWORKER_* settings at all; a TMPDIR of its own marks every process the demo starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQWORKER_", "CELERY_"))}
    marker = tmp_path / "tmp"
    marker.mkdir()
    env.update(TMPDIR=str(marker), PYTHONPATH=os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")])))
    return env


def _left_behind(env: dict[str, str], redis_port: str) -> list[str]:
    """Processes still alive that the demo started: by their environment or the Redis port."""
    marker = f"TMPDIR={env['TMPDIR']}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if marker in environ.split(b"\0") or f"127.0.0.1:{redis_port}".encode() in cmdline:
            found.append(f"{proc.name}: {cmdline.decode(errors='replace')}")
    return found


def _redis_port(out: str) -> str:
    match = re.search(r"private Redis\s+redis://127\.0\.0\.1:(\d+)/", out)
    assert match, out
    return match.group(1)


def test_the_demo_runs_end_to_end_and_stops_all_it_started(tmp_path: Path) -> None:
    env = _demo_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "producer.cli", "demo", "--jobs", "40"], env=env,
                          cwd=tmp_path, text=True, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert _redis_port(out) != "6379"
    for label in ("succeeded", "failed", "retries", "cache hits", "API served", "results:"):
        assert re.search(rf"^\s*{label}", out, re.MULTILINE), (label, out)
    assert "done in " in out and "stopped the workers" in out

    # 36 tracks then 4 of them again. Of tracks 1..36, 25 answers 404 and 17 is always
    # 503; 3, 13, 23, 33 fail once, 6, 16, 26, 36 twice, 9 gets one 429, 17 retries 4 times.
    assert re.search(r"^\s*succeeded\s+38$", out, re.MULTILINE), out
    assert re.search(r"^\s*failed\s+2\s", out, re.MULTILINE), out
    assert re.search(r"^\s*retries\s+17\s", out, re.MULTILINE), out
    assert re.search(r"^\s*cache hits\s+4\s", out, re.MULTILINE), out
    assert re.search(r"API served\s+53\s+requests, of them 1 x 429 .* and 17 x 5xx", out), out

    results = tmp_path / "reqworker-demo-results.jsonl"
    assert str(results) in out
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 40
    failed = {r["key"]: r for r in records if not r["ok"]}
    assert set(failed) == {"track-25", "track-17"}
    assert failed["track-25"]["error"]["status_code"] == 404
    assert "max retries exceeded" in failed["track-17"]["error"]["message"]
    assert {r["key"] for r in records if r["from_cache"]} == {f"again-{n}" for n in (1, 2, 4, 5)}
    assert _left_behind(env, _redis_port(out)) == []


def test_ctrl_c_stops_the_demo_and_everything_it_started(tmp_path: Path) -> None:
    env = _demo_env(tmp_path)
    # its own session, as a terminal's foreground job: Ctrl-C reaches the demo and its redis-server
    demo = subprocess.Popen([sys.executable, "-m", "producer.cli", "demo", "--jobs", "5000"],
                            env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if " done, " in line:  # the first progress line: workers up, jobs enqueued
                break
        out = "".join(seen)
        assert " done, " in out, out
        os.killpg(demo.pid, signal.SIGINT)
        out += demo.stdout.read()
        assert demo.wait(timeout=60) == 130, out
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert "interrupted" in out and "stopped the workers" in out
    assert not (tmp_path / "reqworker-demo-results.jsonl").exists()
    assert _left_behind(env, _redis_port(out)) == []
