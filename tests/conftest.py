"""Shared fixtures: a private redis-server, a loopback API, and the environment to reach them.

Nothing here touches the machine's own Redis or RabbitMQ. The hooks at the end order
the modules for pytest-xdist's processes, run every test in a turn shared with the tests
of the other processes (``alone`` makes one exclusive: ``tests.support.turns``), and let
``-p no:xdist`` run the suite in one process.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis

from producer.demo.localredis import LocalRedis
from tests.support import WorkerProcess
from tests.support.loopback import LoopbackAPI
from tests.support.oauth import Provider
from tests.support.turns import FOLDER_ENV, Turns
from worker.keys import Keys


@pytest.fixture(scope="session", autouse=True)
def _no_worker_left_behind() -> Iterator[None]:
    yield
    for worker in WorkerProcess.started:
        worker.kill()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="session")
def loopback_api() -> Iterator[LoopbackAPI]:
    with LoopbackAPI() as api:
        yield api


AMQP_URL = os.environ.get("REQWORKER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _reachable(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Environment for the broker under test: the private Redis, or RabbitMQ where reachable.

    On RabbitMQ each module gets a queue of its own, deleted afterwards. In CI an
    unreachable RabbitMQ fails the tests instead of skipping them.
    """
    if request.param == "redis":
        yield {}
        return
    if not _reachable(AMQP_URL):
        message = f"RabbitMQ is not reachable at {AMQP_URL}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI runs the broker tests on both brokers)")
        pytest.skip(message)
    queue = f"reqworker-test-{uuid.uuid4().hex[:8]}"
    yield {"REQWORKER_BROKER_URL": AMQP_URL, "REQWORKER_QUEUE": queue}
    from kombu.connection import Connection

    with Connection(AMQP_URL) as conn:
        conn.default_channel.queue_delete(queue)


@pytest.fixture
def client(redis_server: LocalRedis) -> Iterator[redis.Redis[bytes]]:
    """A connection to the suite's private Redis."""
    conn = redis.Redis.from_url(redis_server.url)
    yield conn
    conn.close()


@pytest.fixture
def keys() -> Keys:
    """Key names under a prefix of this test's own."""
    return Keys(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def provider() -> Iterator[Provider]:
    """A fake OAuth provider on loopback."""
    fake = Provider()
    fake.api.start()
    yield fake
    fake.api.stop()


#: Fixtures that start a redis-server, a loopback API or a worker process: a test that uses
#: one (directly or through another fixture) is an integration test.
INTEGRATION_FIXTURES = frozenset({"redis_server", "loopback_api", "provider", "broker"})


#: Modules that take a minute or more, most of it waiting (visibility timeouts, countdowns,
#: a pause): they start early, so that no process is left with one of them at the end.
LONG_MODULES = ("test_waiting_survives_e2e.py", "test_waiting_e2e.py", "test_batches_e2e.py",
                "test_resume_e2e.py")


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Generator[None, None, None]:
    # Before every other plugin's hook: -m selects by this mark.
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    # pytest-xdist's processes take a module at a time (--dist=loadfile), in this order:
    # first the modules with a test that runs alone, and the quick ones, so that while it
    # waits for its turn the others run short tests; then the long modules, then the rest.
    # Within a module the order stays.
    alone = {_module(i) for i in items if "alone" in getattr(i, "fixturenames", ())}
    integration = {_module(i) for i in items if i.get_closest_marker("integration")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        module = _module(item)
        name = module.rsplit("/", 1)[-1]
        if module in alone:
            return 0, 0
        if module not in integration:
            return 1, 0
        if name in LONG_MODULES:
            return 2, LONG_MODULES.index(name)
        return 3, 0

    items.sort(key=rank)
    yield


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """With pytest-xdist turned off (``-p no:xdist``), its options in pyproject.toml's
    addopts are accepted and mean nothing: the tests run in this process."""
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist (off)")
    group.addoption("--numprocesses", dest="numprocesses", default=None,
                    help="ignored: pytest-xdist is off")
    group.addoption("--dist", dest="dist", default="no", help="ignored: pytest-xdist is off")
    group.addoption("--no-loadscope-reorder", action="store_true", help="ignored: pytest-xdist is off")


_TURNS = pytest.StashKey[Turns]()
_MADE_TURNS = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    if FOLDER_ENV not in os.environ:  # the run's first process: its xdist workers inherit it
        folder = tempfile.mkdtemp(prefix="reqworker-turns-")
        os.environ[FOLDER_ENV] = config.stash[_MADE_TURNS] = folder
    config.stash[_TURNS] = Turns(Path(os.environ[FOLDER_ENV]))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TURNS in config.stash:
        config.stash[_TURNS].close()
    if _MADE_TURNS in config.stash:
        del os.environ[FOLDER_ENV]
        shutil.rmtree(config.stash[_MADE_TURNS], ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, object, object]:
    """Every test runs in a shared turn, with its fixtures' set-up and teardown."""
    with item.config.stash[_TURNS].shared():
        return (yield)


@pytest.fixture
def alone(pytestconfig: pytest.Config) -> Callable[[], AbstractContextManager[None]]:
    """``with alone():`` runs its block while no test of another process runs: for a test
    that counts how many requests its workers send per second."""
    return pytestconfig.stash[_TURNS].exclusive
