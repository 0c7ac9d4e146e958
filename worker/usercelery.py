"""The user's own Celery settings: a module named in ``REQWORKER_CELERY_CONFIG``.

Its lowercase names that are Celery settings are applied over reqworker's, in the
workers and in every producer. A name Celery does not know is an error (a typo would
otherwise be ignored), and the serializer settings stay JSON: they are what keeps a
pickle from anyone who can write to the broker from running code in a worker.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import Any

from worker.settings import SettingsError

ENV = "REQWORKER_CELERY_CONFIG"

#: Settings a user module may not change (JSON only, never pickle).
FIXED = frozenset({"task_serializer", "result_serializer", "accept_content",
                   "result_accept_content", "event_serializer"})


@cache
def celery_setting_names() -> frozenset[str]:
    from celery.app.defaults import NAMESPACES, flatten

    return frozenset(name for name, _ in flatten(NAMESPACES))


def user_celery_settings(module_name: str | None) -> dict[str, Any]:
    """The Celery settings the module defines; {} without one."""
    if not module_name:
        return {}
    module = _load(module_name)
    found: dict[str, Any] = {}
    for name, value in vars(module).items():
        if name.startswith("_") or not name.islower() or isinstance(value, ModuleType):
            continue
        if callable(value) and not isinstance(value, type):
            continue  # helper functions of the module
        if name not in celery_setting_names():
            raise SettingsError(f"{ENV}={module_name}: {name!r} is not a Celery setting")
        if name in FIXED:
            raise SettingsError(f"{ENV}={module_name}: {name!r} cannot be changed: "
                                "reqworker accepts JSON messages and results only")
        found[name] = value
    return found


def _load(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"{ENV}={module_name}: cannot import it ({exc}); "
                            "it must be a module on the Python path") from None
