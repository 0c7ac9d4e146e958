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

#: The attribute of a Redis client that holds the scripts registered on it.
_REGISTERED = "_reqworker_scripts"


@cache
def source(*names: str) -> str:
    """The text of the named ``.lua`` files of the ``worker`` package, joined in order.

    Several names make one script: the first ones define what the last one uses.
    """
    return "\n".join(files("worker").joinpath(name).read_text(encoding="utf-8") for name in names)


def script(client: Any, *names: str) -> Script:
    """The script made of ``names``, registered on ``client`` the first time it is asked for."""
    registered: dict[tuple[str, ...], Script] | None = getattr(client, _REGISTERED, None)
    if registered is None:
        registered = {}
        setattr(client, _REGISTERED, registered)
    if names not in registered:
        registered[names] = client.register_script(source(*names))
    return registered[names]
