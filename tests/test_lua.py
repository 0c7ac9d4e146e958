"""The Lua scripts: every .lua file a module names is package data, and runs on a real Redis."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import redis

from producer.demo.localredis import LocalRedis
from worker import lua

WORKER = Path(__file__).resolve().parent.parent / "worker"
#: A .lua file named in a module of the worker package (``script(client, "x.lua")``).
NAMED = re.compile(r"""["']([a-z_]+\.lua)["']""")


def named_scripts() -> set[str]:
    return {name for module in WORKER.glob("*.py") for name in NAMED.findall(module.read_text())}


def test_every_lua_file_a_module_names_is_package_data() -> None:
    named = named_scripts()
    assert {"ratelimit_clock.lua", "ratelimit_admit.lua", "batchcount_move.lua",
            "parking_move.lua", "resultstore_store.lua", "tokens_release.lua"} <= named
    for name in named:
        assert "redis.call" in files("worker").joinpath(name).read_text(encoding="utf-8"), name
    assert named == {path.name for path in WORKER.glob("*.lua")}, "a .lua file no module runs"


def test_no_module_keeps_lua_inline() -> None:
    inline = [module.name for module in WORKER.glob("*.py") if "redis.call" in module.read_text()]
    assert inline == []


def test_the_package_data_setting_covers_the_lua_files() -> None:
    pyproject = (WORKER.parent / "pyproject.toml").read_text()
    assert re.search(r'(?m)^\[tool\.setuptools\.package-data\]\n(#.*\n)*worker = \["\*\.lua"\]', pyproject)


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

