"""Two hosts, simulated: two worker groups with their own hostnames against one Redis.

Flower shows both; they share one OAuth token and one rate budget.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from producer.client import Client
from producer.demo.localredis import LocalRedis
from producer.flower import AUTH_ENV
from tests.support import WorkerProcess, base_env, eventually, start_all, stop_all
from tests.support.flower import PASSWORD, USER, FlowerProcess
from tests.support.oauth import ENV, FleetProvider, Realm
from worker.profiles import load_profiles
from worker.settings import Settings

pytestmark = pytest.mark.integration

RATE_PER_S = 25
HOSTS = ("host-a", "host-b")


@pytest.fixture(scope="module")
def provider() -> Iterator[FleetProvider]:
    fleet = FleetProvider(Realm("svc"))
    fleet.api.start()
    yield fleet
    fleet.api.stop()


@pytest.fixture(scope="module")
def env(redis_server: LocalRedis, provider: FleetProvider,
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("hosts")
    profile = provider.profile_toml("svc").replace(
        "timeout = 5\n", f'timeout = 5\nrate_limit = "{RATE_PER_S}/s"\n')
    apis = tmp / "apis.toml"
    apis.write_text(profile)
    return base_env(redis_server.url, str(apis), **ENV, **{AUTH_ENV: f"{USER}:{PASSWORD}"},
                    REQWORKER_KEY_PREFIX=f"hosts{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def fleet(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[FlowerProcess, list[WorkerProcess]]]:
    tmp = tmp_path_factory.mktemp("hostlogs")
    flower = FlowerProcess(env, tmp / "flower.log").wait_ready()
    workers = [WorkerProcess(env, tmp / f"{host}.log", concurrency=8, hostname=f"worker@{host}")
               for host in HOSTS]
    try:
        yield flower, start_all(workers)
    finally:
        stop_all(workers)
        flower.stop()


def test_two_hosts_share_one_token_and_one_rate_budget_and_flower_shows_both(
        env: dict[str, str], provider: FleetProvider,
        fleet: tuple[FlowerProcess, list[WorkerProcess]],
        alone: Callable[[], AbstractContextManager[None]]) -> None:
    flower, _ = fleet

    def listed() -> set[str]:
        return set(flower.get("/api/workers", params={"refresh": "1"}).json())

    eventually(lambda: {f"worker@{h}" for h in HOSTS} <= listed(),
               within_s=90, every_s=0.5, what="Flower listing both hosts")
    client = Client(Settings.from_env(env), load_profiles(Path(env["REQWORKER_APIS"]), env))
    run = uuid.uuid4().hex[:8]
    with alone():  # counted per second: see test_ratelimit_e2e
        report = client.submit_many([{"api": "svc", "path": f"/item/{run}/{i}", "cache": False}
                                     for i in range(150)])
        report.batch.wait(poll_s=0.2, timeout_s=180)
    records = list(report.batch.results())
    assert len(records) == 150
    assert all(r["ok"] and r["attempts"] == 1 for r in records)

    realm = provider.realms["svc"]
    assert realm.token_requests == 1  # one token for both hosts

    times = sorted(h.at for h in provider.api.hits() if h.path.startswith(f"/svc/api/item/{run}/"))
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert busiest <= RATE_PER_S + 1 + 1  # rate + burst + one request of transit jitter

    def ran_on() -> set[str]:
        tasks = flower.get("/api/tasks", params={"limit": "1000"}).json()
        return {t.get("worker") for t in tasks.values() if t.get("state") == "SUCCESS"}

    eventually(lambda: {f"worker@{h}" for h in HOSTS} <= ran_on(), within_s=90, every_s=0.5,
               what="Flower showing jobs run on both hosts")
