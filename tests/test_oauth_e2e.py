"""One authoriser for the whole fleet: the shared OAuth token across real worker processes.

A loopback server plays, per profile, both the token endpoint and an API that accepts only
the newest token it granted (401 otherwise). A token "expires" when the API starts refusing
it after a chosen number of requests, never at a wall-clock time; waits are bounded, and
nothing is timed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.client import Client
from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess, base_env, eventually, stop_all
from tests.support.loopback import Hit, Reply
from tests.support.oauth import ENV, FleetProvider, Realm, every_value
from worker.keys import Keys
from worker.profiles import load_profiles
from worker.settings import Settings

pytestmark = pytest.mark.integration

#: Requests the API accepts with the first token of the "batch" profile before refusing it.
FIRST_TOKEN_USES = 120
BATCH = 500
#: Renewal lease of the "lease" profile: 2 * timeout + 5 s (worker.profiles.Profile.request_lease_s).
LEASE_TIMEOUT_S = 1
LEASE_MS = (2 * LEASE_TIMEOUT_S + 5) * 1000
#: Jobs, one at a time with every worker thread idle, that a 401 fails after their renewal.
ROUNDS = 8
MAIN_PROFILES = ("batch", "once", "twice", "badclient", "secret", "burst")


@dataclass
class Fleet:
    """One deployment: its Redis database and key prefix, a client, and its worker processes."""

    name: str
    env: dict[str, str]
    client: Client
    db: redis.Redis[bytes]
    keys: Keys
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, name: str, concurrency: int = 8) -> WorkerProcess:
        proc = WorkerProcess(self.env, self.tmp / f"{name}.log", concurrency=concurrency,
                             hostname=f"{name}-{self.keys.prefix}@%h")
        self.workers.append(proc)
        return proc.wait_ready()

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit ``jobs`` as one batch, wait for every one to finish, return the results."""
        report = self.client.submit_many(jobs)
        report.batch.wait(poll_s=0.2, timeout_s=120)
        records = list(report.batch.results())
        if len(records) != len(jobs):
            found = {r["job_id"] for r in records}
            lost = [e["id"] for chunk in self.client.store.entries(report.batch.id) for e in chunk
                    if (e.get("same_as") or e["id"]) not in found]
            states = Counter(self.client.app.AsyncResult(job_id).state for job_id in lost)
            pytest.fail(f"{len(lost)} of {len(jobs)} jobs counted finished have no result; "
                        f"their stored states: {dict(states)}")
        return records

    def logs(self) -> str:
        return "".join(proc.log() for proc in self.workers)

    def all_results(self) -> list[dict[str, Any]]:
        ids = [raw.decode() for raw in self.db.zrange(self.keys.batches(), 0, -1)]
        return [record for batch_id in ids for record in self.client.batch(batch_id).results()]

    def stop(self) -> None:
        stop_all(self.workers)


def make_fleet(name: str, redis_url: str, provider: FleetProvider, profiles: str, tmp: Path) -> Fleet:
    apis = tmp / "apis.toml"
    apis.write_text(profiles)
    keys = Keys(f"oa{uuid.uuid4().hex[:6]}")
    env = base_env(redis_url, str(apis), REQWORKER_KEY_PREFIX=keys.prefix, **ENV)
    client = Client(Settings.from_env(env), load_profiles(apis, env, with_secrets=False))
    return Fleet(name, env, client, redis.Redis.from_url(redis_url), keys, tmp)


def jobs(api: str, count: int, **fields: Any) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    return [{"api": api, "path": f"/item/{run}/{i}", "key": i, "cache": False, **fields}
            for i in range(count)]


def backoff_countdowns(logs: str) -> set[str]:
    """Ids of the jobs whose task logged a backoff countdown."""
    return set(re.findall(r"job (\S+) countdown=", logs))


def renewal_waits(logs: str) -> set[str]:
    """Ids of the jobs retried at once (no countdown) after their credentials were renewed."""
    return set(re.findall(r"job (\S+) waits 0 s: HTTP 401 .*credentials renewed", logs))


@pytest.fixture(scope="module")
def provider() -> Iterator[FleetProvider]:
    fake = FleetProvider(
        Realm("batch", accept_limit={1: FIRST_TOKEN_USES}),
        Realm("once", accept_limit={1: 0}),
        Realm("twice"),
        Realm("badclient", refusal=Reply(401, json={"error": "invalid_client",
                                                    "error_description": "Bad client credentials"})),
        Realm("secret", accept_limit={1: 5}),
        Realm("burst"),
        Realm("lease", accept_limit={1: 0}, hang=frozenset({2})),
    )
    with fake.api:
        yield fake
        for realm in fake.realms.values():
            realm.release.set()


@pytest.fixture(scope="module")
def fleet(redis_server: LocalRedis, provider: FleetProvider,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two worker processes of 8 threads each, on the suite's database 0."""
    profiles = "".join(provider.profile_toml(name) for name in MAIN_PROFILES)
    main = make_fleet("main", redis_server.url, provider, profiles, tmp_path_factory.mktemp("oauth"))
    for i in range(2):
        main.worker(f"w{i}")
    yield main
    main.stop()


@pytest.fixture(scope="module")
def lone(redis_server: LocalRedis, provider: FleetProvider,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A deployment of its own (database 1, so its own queue) whose workers a test starts."""
    url = redis_server.url.rsplit("/", 1)[0] + "/1"
    profiles = provider.profile_toml("lease", timeout=LEASE_TIMEOUT_S)
    other = make_fleet("lone", url, provider, profiles, tmp_path_factory.mktemp("lease"))
    yield other
    other.stop()
    other.db.flushdb()  # the killed worker's job stays unacknowledged until the visibility timeout


def test_a_job_retried_at_once_after_a_renewal_keeps_its_final_result(
        fleet: Fleet, provider: FleetProvider) -> None:
    # First in the module, on fresh worker threads. Celery publishes a retry before the run
    # that asked for it stores its RETRY state; an idle thread can finish a countdown-0 retry
    # (here with a FAILURE, which Celery does not guard) first, and the late RETRY must not
    # then replace the job's final result.
    realm = provider.realms["burst"]
    provider.api.script("/burst/api/revoked", Reply(401, json={"error": {"message": "revoked"}}))
    records: list[dict[str, Any]] = []
    for _ in range(ROUNDS):
        records += fleet.run([{"api": "burst", "path": "/revoked", "cache": False}])

    assert [(r["ok"], r["attempts"], r["status_code"]) for r in records] == [(False, 2, 401)] * ROUNDS
    assert realm.token_requests == 1 + ROUNDS  # the first token, and one renewal a job


def test_a_token_that_expires_mid_batch_is_renewed_once_for_the_whole_fleet(
        fleet: Fleet, provider: FleetProvider) -> None:
    realm = provider.realms["batch"]
    records = fleet.run(jobs("batch", BATCH))

    assert all(r["ok"] for r in records)
    # The token endpoint is called 1 + 1 = 2 times: once for the first token (Redis holds
    # none; 16 threads in 2 processes ask, one fetches under the lease, the rest wait for
    # it), and once to renew it: every 401 names token 1, the first job to ask renews it
    # and every later one finds token 2 already stored.
    assert realm.token_requests == 2 == len(realm.issued)
    # Token 1 served FIRST_TOKEN_USES jobs, then expired mid-batch; token 2 served the rest.
    assert realm.accepted[1] == FIRST_TOKEN_USES
    assert realm.accepted[1] + realm.accepted[2] == BATCH
    retried = [r for r in records if r["attempts"] != 1]
    assert {r["attempts"] for r in retried} == {2}
    # Each job retried got exactly one 401 (token 1 in flight when it expired), then token 2.
    assert len(retried) == len(realm.refused) >= 1
    assert {r["body"]["token"] for r in retried} == {2}
    logs = fleet.logs()
    assert renewal_waits(logs) >= {r["job_id"] for r in retried}
    assert not backoff_countdowns(logs) & {r["job_id"] for r in records}


def test_401_then_200_renews_once_and_the_job_succeeds_on_its_second_attempt(
        fleet: Fleet, provider: FleetProvider) -> None:
    realm = provider.realms["once"]  # the API refuses token 1 from its first use
    [record] = fleet.run(jobs("once", 1))

    assert record["ok"] is True
    assert record["status_code"] == 200
    assert record["attempts"] == 2
    assert record["body"]["token"] == 2
    assert realm.token_requests == 2  # the first token, and its one renewal after the 401
    sent = [h.headers["Authorization"] for h in provider.api.hits() if h.path.startswith("/once/api/")]
    assert sent == [f"Bearer {token}" for token in realm.issued]
    logs = fleet.logs()
    assert record["job_id"] in renewal_waits(logs)
    assert record["job_id"] not in backoff_countdowns(logs)


def test_401_even_with_the_renewed_token_fails_with_a_message_naming_the_profile(
        fleet: Fleet, provider: FleetProvider) -> None:
    realm = provider.realms["twice"]
    path = "/twice/api/revoked"
    provider.api.script(path, Reply(401, json={"error": {"message": "access revoked by the admin"}}))
    [record] = fleet.run([{"api": "twice", "path": "/revoked", "cache": False}])

    assert record["ok"] is False
    assert record["attempts"] == 2
    error = record["error"]
    assert error["type"] == "APIError"
    assert error["status_code"] == 401
    assert "access revoked by the admin" in error["message"]
    assert "profile 'twice'" in error["message"]
    assert "even after they were renewed" in error["message"]
    assert realm.token_requests == 2  # the first token, one renewal, and no second renewal
    sent = [h.headers["Authorization"] for h in provider.api.hits(path)]
    assert sent == [f"Bearer {token}" for token in realm.issued]
    assert record["job_id"] not in backoff_countdowns(fleet.logs())


def test_refused_client_credentials_fail_every_job_with_one_call_to_the_token_endpoint(
        fleet: Fleet, provider: FleetProvider) -> None:
    realm = provider.realms["badclient"]
    records = fleet.run(jobs("badclient", 50))

    for record in records:
        assert record["ok"] is False
        assert record["attempts"] == 0
        assert record["error"]["type"] == "AuthError"
        assert record["error"]["status_code"] is None
        assert "profile 'badclient'" in record["error"]["message"]
        assert "HTTP 401 Bad client credentials" in record["error"]["message"]
    # One job asks; the refusal is remembered in Redis and the other 49 fail on it.
    assert realm.token_requests == 1
    assert not [h for h in provider.api.hits() if h.path.startswith("/badclient/api/")]
    assert not backoff_countdowns(fleet.logs()) & {r["job_id"] for r in records}


def test_a_worker_killed_while_renewing_holds_up_the_others_only_until_its_lease_ends(
        lone: Fleet, provider: FleetProvider) -> None:
    realm = provider.realms["lease"]  # the API refuses token 1 at once; token request 2 hangs
    lock_key = lone.keys.token_lock("lease")
    worker_a = lone.worker("a", concurrency=2)
    lock_at_call: dict[int, bytes | None] = {}

    def at_token_request(n: int, hit: Hit) -> None:
        lock_at_call[n] = lone.db.get(lock_key)
        if n == 2:  # A's renewal: A holds the lock and waits for this answer; kill it now
            worker_a.kill()

    realm.on_token = at_token_request
    lone.client.submit(jobs("lease", 1)[0])  # A: token 1, a 401, a renewal, killed
    eventually(lambda: realm.token_requests == 2 and worker_a.proc.poll() is not None,
               what="worker A killed during its renewal")
    lease_a = lock_at_call[2]
    assert lease_a is not None
    assert lone.db.get(lock_key) == lease_a
    assert 0 < lone.db.pttl(lock_key) <= LEASE_MS
    worker_b = lone.worker("b", concurrency=4)

    records = lone.run(jobs("lease", 8))

    assert all(r["ok"] for r in records)
    assert {r["body"]["token"] for r in records} == {2}
    # B's first job sends token 1 (still stored: A died before replacing it) and gets a 401;
    # a job retried after a 401 succeeds at its second attempt.
    retried = [r for r in records if r["attempts"] != 1]
    assert {r["attempts"] for r in retried} == {2}
    assert len(retried) == len(realm.refused) - 1 >= 1  # one 401 was A's
    # 1 + 1 + 1 token requests: A's first token, A's renewal (A died in it), B's renewal,
    # which B made only once A's lease had run out, under a lease of its own.
    assert realm.token_requests == 3
    assert lock_at_call[3] is not None
    assert lock_at_call[3] != lease_a
    assert lone.db.get(lock_key) is None  # B gave its lease back
    assert not backoff_countdowns(worker_b.log()) & {r["job_id"] for r in records}


def stored_access_token(fleet: Fleet, profile: str) -> str | None:
    raw = fleet.db.get(fleet.keys.token(profile))
    return None if raw is None else json.loads(raw)["access_token"]


def test_the_raw_token_is_only_ever_under_its_token_key(
        fleet: Fleet, lone: Fleet, provider: FleetProvider) -> None:
    records = fleet.run(jobs("secret", 30, cache=True))  # a renewal, and GET cache entries
    assert all(r["ok"] for r in records)
    secret = provider.realms["secret"]
    assert len(secret.issued) == 2
    assert stored_access_token(fleet, "secret") == secret.issued[-1]

    # Every token granted in this module so far, against every key and value of both
    # deployments' databases, every worker's log and every result of every batch.
    places = {f"{f.name} {key}": value for f in (fleet, lone) for key, value in every_value(f.db).items()}
    logs = fleet.logs() + lone.logs()
    results = json.dumps(fleet.all_results() + lone.all_results())
    for name, realm in provider.realms.items():
        owner = lone if name == "lease" else fleet
        current = stored_access_token(owner, name)
        for token in realm.issued:
            holding = {place for place, value in places.items() if token in value}
            expected = {f"{owner.name} {owner.keys.token(name)}"} if token == current else set()
            assert holding == expected, f"profile {name}: token {token[:12]}..."
            assert token not in logs, f"profile {name}"
            assert token not in results, f"profile {name}"
