"""Redis Sentinel: a primary, a replica and a Sentinel; the primary dies mid-batch.

Everything (broker, results, batches, cache, rate budget) reaches Redis through one
``sentinel://`` URL. The primary is killed with SIGKILL while workers are busy; the
Sentinel promotes the replica, and the same workers finish the batch on it by
themselves, with exactly one result per job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.client import Client
from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, base_env, eventually, run_cli, stop_all
from tests.support.loopback import LoopbackAPI, Reply
from worker.profiles import load_profiles
from worker.settings import Settings

pytestmark = pytest.mark.integration

MASTER = "reqmaster"
JOBS = 120


class Group:
    """A primary, its replica and one Sentinel watching them, all private."""

    def __init__(self) -> None:
        self.primary = LocalRedis().start()
        self.replica = LocalRedis(args=["--replicaof", "127.0.0.1", str(self.primary.port)]).start()
        self.sentinel = LocalRedis(sentinel=[
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 1",
            f"sentinel down-after-milliseconds {MASTER} 1000",
            f"sentinel failover-timeout {MASTER} 5000",
            f"sentinel parallel-syncs {MASTER} 1",
        ]).start()
        self.url = f"sentinel://127.0.0.1:{self.sentinel.port}/0"
        ask = redis.Redis(port=self.sentinel.port, decode_responses=True)

        def replica_known() -> bool:
            replicas = ask.sentinel_slaves(MASTER)
            return any(r["port"] == self.replica.port and not r["is_disconnected"]
                       and r.get("master-link-status") == "ok" for r in replicas)

        eventually(replica_known, within_s=60, every_s=0.2, what="the Sentinel to see the replica")
        self.ask = ask

    def primary_port(self) -> int:
        return int(self.ask.sentinel_get_master_addr_by_name(MASTER)[1])

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            server.stop()


@pytest.fixture(scope="module")
def group() -> Iterator[Group]:
    servers = Group()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def api() -> Iterator[LoopbackAPI]:
    with LoopbackAPI() as loopback:
        # Slow enough that the batch is still running when the primary dies.
        loopback.script("/slow", Reply(json={"ok": True}, delay_s=0.1))
        yield loopback


def _env(group: Group, api: LoopbackAPI, tmp: Path) -> dict[str, str]:
    apis = tmp / "apis.toml"
    apis.write_text(f"""
[apis.fo]
base_url = "{api.url}"
timeout = 5
backoff = {{ start = 0.2, factor = 2, count = 6 }}
""")
    return base_env(group.url, str(apis), REQWORKER_SENTINEL_MASTER=MASTER,
                    REQWORKER_KEY_PREFIX=f"s{uuid.uuid4().hex[:8]}")


def test_a_sentinel_url_without_the_primarys_name_is_refused(
        group: Group, api: LoopbackAPI, tmp_path: Path) -> None:
    env = _env(group, api, tmp_path)
    del env["REQWORKER_SENTINEL_MASTER"]
    done = run_cli(env, "status", "0" * 32)
    assert done.returncode == 2
    assert "REQWORKER_SENTINEL_MASTER" in done.stderr
    assert "Traceback" not in done.stderr


def test_workers_carry_on_after_the_primary_is_killed(
        group: Group, api: LoopbackAPI, tmp_path: Path) -> None:
    env = _env(group, api, tmp_path)
    settings = Settings.from_env(env)
    client = Client(settings, load_profiles(settings.apis_path, env, with_secrets=False))
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log", concurrency=4, hostname=f"w{i}@sentinel")
               for i in range(2)]
    for worker in workers:
        worker.wait_ready()
    try:
        report = client.submit_many(
            [{"api": "fo", "path": "/slow", "params": {"n": i}, "key": f"k{i}"} for i in range(JOBS)])
        batch = report.batch
        eventually(lambda: batch.status().done >= JOBS // 4, within_s=120, what="a quarter done")
        old_port = group.primary_port()
        group.primary.kill()
        assert not batch.status().finished, "the primary must die mid-batch"
        eventually(lambda: group.primary_port() != old_port, within_s=60, every_s=0.2,
                   what="the Sentinel to promote the replica")
        assert group.primary_port() == group.replica.port
        counts = batch.wait(poll_s=0.2, timeout_s=240)
        assert counts.succeeded == JOBS, counts
        assert counts.failed == 0, counts
        records = list(batch.results())
        assert sorted(r["key"] for r in records) == sorted(f"k{i}" for i in range(JOBS))
        assert len({r["job_id"] for r in records}) == JOBS
        assert all(r["ok"] for r in records)
        for worker in workers:
            assert worker.proc.poll() is None, "a worker died with the primary"
    finally:
        stop_all(workers)
