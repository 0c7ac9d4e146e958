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
import requests

from producer.demo.api import TOKEN_LIFETIME_S
from tests.support import REPO

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


def _line(label: str, number: int) -> str:
    return rf"^  {label}\s+{number}(\s|$)"


def test_the_demo_runs_end_to_end_and_stops_all_it_started(tmp_path: Path) -> None:
    env = _demo_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "producer.cli", "demo", "--jobs", "40", "--no-flower"],
                          env=env, cwd=tmp_path, text=True, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert _redis_port(out) != "6379"
    assert "Flower" not in out
    assert "done in " in out
    assert "stopped the workers, the demo API and the private Redis" in out

    # 2 playlists (2 and 3 pages), 34 tracks, then 4 of them again. Of tracks 1..34, 25
    # answers 404 and 17 is always 503 (4 retries); 9 gets one 429, 3 and 23 one 500,
    # 6 and 26 a 502 then a 503.
    expected = {"succeeded": 41, "failed": 2, "retries": 11, "cache hits": 4, "pages": 5,
                "429 over limit": 0, "429 planned": 1, "API served": 50}
    for label, number in expected.items():
        assert re.search(_line(label, number), out, re.MULTILINE), (label, number, out)
    # One token for the whole fleet (2 workers x 4 threads) while it lives, whatever the run
    # took: a new one only each time the last one neared its end. No request got a 401.
    wall = re.search(r"^done in ([0-9.]+) s$", out, re.MULTILINE)
    tokens = re.search(r"^  tokens issued\s+(\d+)\s", out, re.MULTILINE)
    assert wall, out
    assert tokens, out
    assert 1 <= int(tokens.group(1)) <= 1 + float(wall.group(1)) // (TOKEN_LIFETIME_S / 2), out
    assert "requests: 37 x 200, 1 x 404, 1 x 429, 2 x 500, 2 x 502, 7 x 503" in out, out
    assert "by design: 1 x HTTP 404, 1 x HTTP 503 until retries ran out" in out, out

    apis = re.search(r"^profile 'demo'\s+(\S+)", out, re.MULTILINE)
    assert apis, out
    profile = Path(apis.group(1)).read_text()
    assert 'kind = "oauth2"' in profile
    assert 'rate_limit = "150/s"' in profile
    assert 'client_secret = "${DEMO_CLIENT_SECRET}"' in profile

    results = tmp_path / "reqworker-demo-results.jsonl"
    assert str(results) in out
    assert "jq -c 'select(.ok | not)" in out
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 43
    failed = {r["key"]: r for r in records if not r["ok"]}
    assert set(failed) == {"track-25", "track-17"}
    assert failed["track-25"]["error"]["status_code"] == 404
    assert "max retries exceeded" in failed["track-17"]["error"]["message"]
    assert {r["key"] for r in records if r["from_cache"]} == {f"again-{n}" for n in (1, 2, 4, 5)}
    pages = sorted((r["key"], r["page"], len(r["body"]["items"])) for r in records if "page" in r)
    assert pages == [("playlist-1", 1, 50), ("playlist-1", 2, 20), ("playlist-2", 1, 50),
                     ("playlist-2", 2, 50), ("playlist-2", 3, 20)]
    assert _left_behind(env, _redis_port(out)) == []


def test_ctrl_c_stops_the_demo_flower_and_everything_it_started(tmp_path: Path) -> None:
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
        flower = re.search(r"^Flower\s+(http://127\.0\.0\.1:\d+)\s+\(user (\S+), password (\S+)\)",
                           out, re.MULTILINE)
        assert flower, out
        url, user, password = flower.groups()
        assert requests.get(url + "/workers", timeout=30).status_code == 401
        assert requests.get(url + "/workers", auth=(user, password), timeout=30).status_code == 200
        os.killpg(demo.pid, signal.SIGINT)
        out += demo.stdout.read()
        assert demo.wait(timeout=60) == 130, out
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert "interrupted" in out
    assert "stopped the workers, Flower," in out
    assert not (tmp_path / "reqworker-demo-results.jsonl").exists()
    assert _left_behind(env, _redis_port(out)) == []
