"""The Lua scripts reqworker runs in Redis: ``.lua`` files beside the modules that run them.

A script is read from the package's data (so it is found in a wheel as in a checkout)
and registered once per Redis client: every later call on that client runs it by its
SHA1 (``EVALSHA``), loading it again only if the server forgot it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoScriptError

#: The attribute of a Redis client that holds the scripts registered on it.
_REGISTERED = "_reqworker_scripts"


@cache
def source(*names: str, package: str = "worker") -> str:
    """The text of the named ``.lua`` files of ``package``, joined in order.

    Several names make one script: the first ones define what the last one uses.
    """
    return "\n".join(files(package).joinpath(name).read_text(encoding="utf-8") for name in names)


def script(client: Any, *names: str, package: str = "worker") -> Script:
    """The script made of ``names`` (files of ``package``), registered on ``client`` once."""
    registered: dict[tuple[str, ...], Script] | None = getattr(client, _REGISTERED, None)
    if registered is None:
        registered = {}
        setattr(client, _REGISTERED, registered)
    key = (package, *names)
    if key not in registered:
        registered[key] = client.register_script(source(*names, package=package))
    return registered[key]


def queue(pipe: Any, run: Any, keys: list[Any], args: list[Any]) -> None:
    """Queue ``run`` on a pipeline by its SHA1 alone.

    redis-py asks the server ``SCRIPT EXISTS`` before every pipeline that holds a
    ``Script``: one more round trip each time. (``run`` is a ``Script``; the stubs of
    types-redis lack its ``sha`` and ``script``.) A pipeline of queued scripts is run by
    ``execute_idempotent`` instead, which loads them only when the server says it lost them.
    """
    pipe.evalsha(run.sha, len(keys), *keys, *args)


def execute_idempotent(build: Any, client: Any, *scripts: Any) -> list[Any]:
    """Run the pipeline ``build()`` makes; on ``NOSCRIPT`` (a restarted or flushed Redis),
    load ``scripts`` and run a new one. Only for commands that may safely run twice."""
    try:
        return list(build().execute())
    except NoScriptError:
        for each in scripts:
            client.script_load(each.script)
        return list(build().execute())
