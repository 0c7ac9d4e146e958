"""Every command, when Redis is down, wants a password, or refuses writes: one line, exit 1.

Three private redis-servers: one stopped, one with a password the URL lacks, one
whose memory is full under ``noeviction``. No command may show a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from producer.cli import main
from producer.client import Client
from producer.demo.localredis import LocalRedis
from tests.support import base_env, run_cli
from worker.profiles import load_profiles
from worker.settings import Settings

pytestmark = pytest.mark.integration

PROFILES = """
[apis.p]
base_url = "http://127.0.0.1:9/v1"
timeout = 2

[apis.o]
base_url = "http://127.0.0.1:9/v1"
timeout = 2

[apis.o.auth]
kind = "oauth2"
token_url = "http://127.0.0.1:9/token"
auth_url = "http://127.0.0.1:9/authorize"
redirect_port = 1
client_id = "cid"
client_secret = "csecret"
"""

BATCH = "0" * 32


def commands(tmp: Path, batch_id: str) -> dict[str, list[str]]:
    jobs = tmp / "jobs.jsonl"
    jobs.write_text(json.dumps({"api": "p", "path": "/x"}) + "\n")
    return {
        "enqueue": ["enqueue", str(jobs)],
        "status": ["status", batch_id],
        "results": ["results", batch_id],
        "watch": ["watch", batch_id],
        "retry-failed": ["retry-failed", batch_id],
        "limits": ["limits"],
        "batches": ["batches"],
        "recount": ["recount", batch_id],
        "dead-letters": ["dead-letters"],
        "request": ["request", "GET", "/x", "--api", "p", "--timeout", "5"],
        "worker": ["worker"],
        "flower": ["flower", "--port", "1"],
        "auth": ["auth", "o", "--no-browser", "--timeout", "1"],
    }


WRITES = ("enqueue", "retry-failed", "request", "worker", "flower", "auth", "recount")


def env_for(url: str, tmp: Path) -> dict[str, str]:
    apis = tmp / "apis.toml"
    apis.write_text(PROFILES)
    return base_env(url, str(apis), REQWORKER_KEY_PREFIX=f"f{uuid.uuid4().hex[:6]}")


def invoke(env: dict[str, str], argv: list[str]) -> tuple[int, str]:
    """Run one command in this process, as `reqworker ARGV` would; (exit code, stderr)."""
    result = CliRunner().invoke(main, argv, env={k: env.get(k) for k in
                                                 {*env, *os.environ}})
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{argv}: {result.exception!r} escaped\n{result.stderr}"
    return result.exit_code, result.stderr


def assert_one_line(code: int, stderr: str, argv: list[str], *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1, f"{argv}: exit {code}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"{argv}:\n{stderr}"
    assert lines[0].startswith("reqworker: "), f"{argv}:\n{stderr}"
    for word in words:
        assert word in lines[0], f"{argv}: {word!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def stopped() -> str:
    server = LocalRedis().start()
    server.stop()
    return server.url


@pytest.fixture(scope="module")
def with_password() -> Iterator[LocalRedis]:
    with LocalRedis(args=["--requirepass", "s3cret-pw"]) as server:
        yield server


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[dict[str, str], str, Path]]:
    """A Redis with one batch in it, then maxmemory 1mb under noeviction, filled up."""
    tmp = tmp_path_factory.mktemp("full")
    with LocalRedis(args=["--maxmemory-policy", "noeviction"]) as server:
        env = env_for(server.url, tmp)
        settings = Settings.from_env(env)
        client = Client(settings, load_profiles(settings.apis_path, env, with_secrets=False))
        batch_id = client.submit_many([{"api": "p", "path": "/x"}]).batch.id
        direct = redis.Redis.from_url(server.url)
        direct.config_set("maxmemory", "1mb")
        def fill() -> None:
            for i in range(10_000):
                direct.set(f"filler:{i}", b"x" * 10_000)

        with pytest.raises(redis.exceptions.OutOfMemoryError):  # type: ignore[attr-defined]  # (old stubs)
            fill()
        yield env, batch_id, tmp


def test_every_command_is_tried_here(tmp_path: Path) -> None:
    # `demo` starts a Redis of its own, so it is the one command no URL can break.
    assert set(commands(tmp_path, BATCH)) | {"demo"} == set(main.commands)


def test_every_command_says_in_one_line_that_redis_is_down(stopped: str, tmp_path: Path) -> None:
    env = env_for(stopped, tmp_path)
    port = stopped.rsplit(":", 1)[1].split("/")[0]
    for argv in commands(tmp_path, BATCH).values():
        code, stderr = invoke(env, argv)
        assert_one_line(code, stderr, argv, f"127.0.0.1:{port}", "cannot connect")


def test_every_command_says_in_one_line_that_the_password_is_wrong(
        with_password: LocalRedis, tmp_path: Path) -> None:
    for url in (with_password.url, with_password.url.replace("redis://", "redis://:wrong@")):
        env = env_for(url, tmp_path)
        for argv in commands(tmp_path, BATCH).values():
            code, stderr = invoke(env, argv)
            assert_one_line(code, stderr, argv, "authentication failed")
            assert "wrong" not in stderr.replace("wrong or missing", ""), "a password leaked"


def test_every_command_that_writes_says_redis_is_out_of_memory(
        full: tuple[dict[str, str], str, Path]) -> None:
    env, batch_id, tmp = full
    every = commands(tmp, batch_id)
    for name in WRITES:
        code, stderr = invoke(env, every[name])
        assert_one_line(code, stderr, every[name], "out of memory", "maxmemory")
    # Reading still works: the batch can be followed and its results fetched.
    code, _ = invoke(env, every["status"])
    assert code == 0


def test_a_redis_that_does_not_answer_times_out_in_one_line(tmp_path: Path) -> None:
    with LocalRedis() as server:
        assert server._proc is not None
        os.kill(server._proc.pid, signal.SIGSTOP)
        try:
            code, stderr = invoke(env_for(server.url, tmp_path), ["status", BATCH])
        finally:
            os.kill(server._proc.pid, signal.SIGCONT)
    assert_one_line(code, stderr, ["status"], "timed out")


def test_the_real_command_prints_no_traceback(stopped: str, tmp_path: Path) -> None:
    done = run_cli(env_for(stopped, tmp_path), "status", BATCH)
    assert_one_line(done.returncode, done.stderr, ["status"], "cannot connect")


# --- a setting reqworker cannot use: one line naming it, exit 2, before anything connects --------

BAD_TIMEOUTS = ("abc", "-5", "nan")
#: Where no Redis listens: a bad setting must stop every command before it connects anywhere.
NOWHERE = "redis://127.0.0.1:9/0"


def assert_names_the_setting(code: int, stderr: str, what: object) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"{what}: exit {code}\n{stderr}"
    assert "Traceback" not in stderr, f"{what}:\n{stderr}"
    assert len(lines) == 1, f"{what}:\n{stderr}"
    assert lines[0].startswith("reqworker: REQWORKER_VISIBILITY_TIMEOUT="), f"{what}: {lines[0]!r}"


def test_every_command_names_a_bad_visibility_timeout(tmp_path: Path) -> None:
    for value in BAD_TIMEOUTS:
        env = env_for(NOWHERE, tmp_path) | {"REQWORKER_VISIBILITY_TIMEOUT": value}
        for argv in commands(tmp_path, BATCH).values():
            code, stderr = invoke(env, argv)
            assert_names_the_setting(code, stderr, (value, argv))


def test_the_real_commands_name_a_bad_visibility_timeout(tmp_path: Path) -> None:
    # Each in a process of its own, so that nothing the test process imported earlier
    # hides a setting read when a module is imported.
    for i, argv in enumerate(commands(tmp_path, BATCH).values()):
        value = BAD_TIMEOUTS[i % len(BAD_TIMEOUTS)]
        env = env_for(NOWHERE, tmp_path) | {"REQWORKER_VISIBILITY_TIMEOUT": value}
        done = run_cli(env, *argv)
        assert_names_the_setting(done.returncode, done.stderr, (value, argv))
    celery = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "threads"]
    env = env_for(NOWHERE, tmp_path) | {"REQWORKER_VISIBILITY_TIMEOUT": "nan"}
    done = subprocess.run(celery, env=env, capture_output=True, text=True, timeout=120)
    assert_names_the_setting(done.returncode, done.stderr, "celery -A worker.app worker")


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_importing_the_apps_reads_no_setting(value: str, tmp_path: Path) -> None:
    env = env_for(NOWHERE, tmp_path) | {"REQWORKER_VISIBILITY_TIMEOUT": value}
    code = ("import celeryconfig, producer.celeryapp, worker.app, worker.tasks, producer.cli\n"
            "print('imported')")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported", done.stderr
