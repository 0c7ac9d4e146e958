"""Celery's own ways work: `celery -A worker.app worker`, options after `--`, a user settings
module, `AsyncResult(job_id).get()`, and `reqworker --version`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from celery.result import AsyncResult

from celeryconfig import celery_settings
from producer.demo.localredis import LocalRedis
from tests.support import REQWORKER, WorkerProcess, run_cli
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack
from worker.errors import JobFailed
from worker.settings import Settings, SettingsError

CELERY_WORKER = [sys.executable, "-m", "celery", "-A", "worker.app", "worker"]


def user_module(tmp: Path, name: str, text: str) -> dict[str, str]:
    """A settings module in its own folder; the environment that names it."""
    folder = tmp / f"user-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / f"{name}.py").write_text(text)
    return {"PYTHONPATH": str(folder), "REQWORKER_CELERY_CONFIG": name}


def with_module(env: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    out = dict(env, **extra)
    out["PYTHONPATH"] = extra["PYTHONPATH"] + ":" + env["PYTHONPATH"]
    return out


# --- pure: the user settings module --------------------------------------------------------


def test_a_user_module_adds_celery_settings_over_reqworkers(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    extra = user_module(tmp_path, "mycelery", "import os\nworker_prefetch_multiplier = 4\n"
                        "broker_pool_limit = 3\n_private = 1\n")
    monkeypatch.syspath_prepend(extra["PYTHONPATH"])
    conf = celery_settings(Settings.from_env({"REQWORKER_CELERY_CONFIG": "mycelery"}))
    assert conf["worker_prefetch_multiplier"] == 4
    assert conf["broker_pool_limit"] == 3
    assert conf["task_acks_late"] is True, "reqworker's own settings stay"


@pytest.mark.parametrize(("text", "says"), [
    ("worker_prefetch_multiplyer = 4\n", "is not a Celery setting"),
    ("accept_content = ['json', 'pickle']\n", "JSON"),
])
def test_a_user_module_cannot_misspell_a_setting_or_allow_pickle(
        text: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bad{uuid.uuid4().hex[:6]}"
    monkeypatch.syspath_prepend(user_module(tmp_path, name, text)["PYTHONPATH"])
    with pytest.raises(SettingsError, match=says):
        celery_settings(Settings.from_env({"REQWORKER_CELERY_CONFIG": name}))


def test_a_missing_user_module_is_named() -> None:
    with pytest.raises(SettingsError, match="REQWORKER_CELERY_CONFIG=no_such_mod"):
        celery_settings(Settings.from_env({"REQWORKER_CELERY_CONFIG": "no_such_mod"}))


def test_version_is_the_package_version() -> None:
    done = run_cli(dict(os.environ), "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"reqworker, version {version('reqworker')}"


# --- with real workers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for path in ("/conv/plain", "/conv/pass", "/conv/found"):
        loopback_api.script(path, Reply(json={"path": path}))
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("conv")) as s:
        yield s


@pytest.mark.integration
def test_celery_a_worker_app_refuses_what_reqworker_worker_refuses(stack: Stack) -> None:
    short = dict(stack.env, REQWORKER_VISIBILITY_TIMEOUT="10")
    theirs = subprocess.run([*CELERY_WORKER, "--pool", "threads"], env=short, capture_output=True,
                            text=True, timeout=120)
    ours = run_cli(short, "worker")
    assert theirs.returncode == ours.returncode == 2
    assert "Traceback" not in theirs.stderr + ours.stderr
    assert "REQWORKER_VISIBILITY_TIMEOUT" in theirs.stderr.strip().splitlines()[-1]
    assert theirs.stderr.strip().splitlines()[-1] == ours.stderr.strip()
    unnamed = dict(stack.env, REQWORKER_REDIS_URL="sentinel://127.0.0.1:1")
    theirs = subprocess.run([*CELERY_WORKER, "--pool", "threads"], env=unnamed, capture_output=True,
                            text=True, timeout=120)
    ours = run_cli(unnamed, "worker")
    assert theirs.returncode == ours.returncode == 2
    assert theirs.stderr.strip() == ours.stderr.strip()
    assert "REQWORKER_SENTINEL_MASTER" in ours.stderr
    down = dict(stack.env, REQWORKER_REDIS_URL="redis://127.0.0.1:1/0")
    theirs = subprocess.run([*CELERY_WORKER, "--pool", "threads"], env=down, capture_output=True,
                            text=True, timeout=120)
    assert theirs.returncode == 1, theirs.stderr
    assert "cannot connect" in theirs.stderr, theirs.stderr


@pytest.mark.integration
def test_celery_a_worker_app_runs_jobs_with_the_users_settings(stack: Stack) -> None:
    env = with_module(stack.env, user_module(stack.tmp, "opscelery",
                                             "worker_pool = 'threads'\nworker_concurrency = 3\n"))
    worker = WorkerProcess(env, stack.tmp / "celery-a.log",
                           command=[*CELERY_WORKER, "--hostname", "plain@conv",
                                    "--loglevel", "INFO"]).wait_ready()
    try:
        assert "concurrency: 3 (thread)" in worker.log()
        record = stack.run({"api": "fast", "path": "/conv/plain"})
        assert record["ok"]
        assert record["status_code"] == 200
    finally:
        worker.stop()


@pytest.mark.integration
def test_options_after_a_double_dash_go_to_celery(stack: Stack) -> None:
    command = [*REQWORKER, "worker", "--hostname", "pass@conv", "--",
               "--without-gossip", "--autoscale=3,1"]
    worker = WorkerProcess(stack.env, stack.tmp / "passthrough.log", command=command).wait_ready()
    try:
        assert "concurrency: {min=1, max=3}" in worker.log()
        assert stack.run({"api": "fast", "path": "/conv/pass"})["ok"]
    finally:
        worker.stop()


@pytest.mark.integration
def test_asyncresult_get_returns_the_record_or_raises_jobfailed(stack: Stack) -> None:
    stack.api.script("/conv/missing", Reply(404, json={"error": {"message": "no such thing"}}))
    worker = stack.worker("asyncresult", concurrency=2)
    try:
        _, ok_id = stack.client.submit({"api": "fast", "path": "/conv/found", "key": "k1"})
        record = AsyncResult(ok_id, app=stack.client.app).get(timeout=60)
        assert record["ok"]
        assert record["key"] == "k1"
        assert record["job_id"] == ok_id
        _, bad_id = stack.client.submit({"api": "fast", "path": "/conv/missing"})
        with pytest.raises(JobFailed) as failed:
            AsyncResult(bad_id, app=stack.client.app).get(timeout=60)
        assert failed.value.record["error"]["status_code"] == 404
        assert str(failed.value) == "APIError 404: no such thing"
        assert AsyncResult(bad_id, app=stack.client.app).state == "FAILURE"
    finally:
        worker.stop()
