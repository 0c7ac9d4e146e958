"""The Lua scripts: every .lua file a module names is package data, and runs on a real Redis."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest
import redis

from producer.demo.localredis import LocalRedis
from worker import lua

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "worker"
PACKAGES = ("worker", "producer")
#: A .lua file named in a module of a package (``script(client, "x.lua")``).
NAMED = re.compile(r"""["']([a-z_]+\.lua)["']""")


def named_scripts(package: str) -> set[str]:
    return {name for module in (ROOT / package).rglob("*.py") for name in NAMED.findall(module.read_text())}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_lua_file_a_module_names_is_package_data(package: str) -> None:
    named = named_scripts(package)
    assert named, package
    for name in named:
        assert "redis.call" in files(package).joinpath(name).read_text(encoding="utf-8"), name
    assert named == {path.name for path in (ROOT / package).glob("*.lua")}, "a .lua file no module runs"


def test_the_worker_scripts_are_named() -> None:
    assert {"ratelimit_clock.lua", "ratelimit_admit.lua", "batchcount_move.lua", "parking_move.lua",
            "parking_repark.lua", "resultstore_store.lua", "tokens_release.lua"} <= named_scripts("worker")


def test_no_module_keeps_lua_inline() -> None:
    modules = [module for package in PACKAGES for module in (ROOT / package).rglob("*.py")]
    inline = [str(module.relative_to(ROOT)) for module in modules if "redis.call" in module.read_text()]
    assert inline == []


def test_the_package_data_setting_covers_the_lua_files() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package in PACKAGES:
        setting = rf'(?m)^\[tool\.setuptools\.package-data\]\n((#.*|\w+ = .*)\n)*{package} = \["\*\.lua"\]'
        assert re.search(setting, pyproject), package


def test_a_script_is_registered_once_per_client(redis_server: LocalRedis) -> None:
    client = redis.Redis.from_url(redis_server.url)
    other = redis.Redis.from_url(redis_server.url)
    first = lua.script(client, "tokens_release.lua")
    assert lua.script(client, "tokens_release.lua") is first
    assert lua.script(other, "tokens_release.lua") is not first
    client.set("lua-test-lock", "mine")
    assert first(keys=["lua-test-lock"], args=["theirs"]) == 0
    assert first(keys=["lua-test-lock"], args=["mine"]) == 1
    client.script_flush()  # the server forgets it: the next call loads it again
    client.set("lua-test-lock", "mine")
    assert first(keys=["lua-test-lock"], args=["mine"]) == 1

