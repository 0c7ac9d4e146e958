"""Bulk enqueue streams its input: memory stays flat however long the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import redis

from producer.client import Client
from producer.demo.localredis import LocalRedis
from producer.jsonl import read_jobs
from tests.support import base_env
from worker.profiles import load_profiles
from worker.settings import Settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self"),
]


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_enqueue_memory_stays_flat_for_200000_lines(redis_server: LocalRedis, tmp_path: Path) -> None:
    """The peak resident memory of this process grows by far less than the file's size."""
    url = redis_server.url.rsplit("/", 1)[0] + "/3"  # a database no worker listens on
    apis = tmp_path / "apis.toml"
    apis.write_text('[apis.fast]\nbase_url = "http://127.0.0.1:9"\n')
    env = base_env(url, str(apis))
    client = Client(Settings.from_env(env), load_profiles(apis, env))
    jobs_file = tmp_path / "huge.jsonl"
    with jobs_file.open("w") as out:
        for i in range(200_000):
            out.write(json.dumps({"api": "fast", "path": f"/echo/m/{i}", "key": f"k{i}",
                                  "params": {"market": "GB"}}) + "\n")
    size = jobs_file.stat().st_size
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak from the current RSS
    before = _peak_rss_bytes()
    try:
        with jobs_file.open() as lines:
            report = client.submit_numbered(read_jobs(lines), name="memory")
        grown = _peak_rss_bytes() - before
        queued = redis.Redis.from_url(url).llen("reqworker")
    finally:
        redis.Redis.from_url(url).flushdb()
    assert report.accepted == 200_000
    assert queued == 200_000
    assert size > 15 * 2**20
    assert grown < 40 * 2**20, f"peak grew by {grown / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"
