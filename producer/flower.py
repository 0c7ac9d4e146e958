"""``reqworker flower``: Flower for this app, behind a login or on loopback only.

Flower reads ``FLOWER_*`` variables itself; reqworker's own switch is
``REQWORKER_FLOWER_BASIC_AUTH=user:password`` (several pairs separated by commas, as
Flower takes them). It is handed to Flower in the environment, never on the command
line, where any user of the machine could read it. Flower always has a login: without
one configured, reqworker makes a random one, prints it once, and Flower listens on
loopback only, whatever address was asked for. ``FLOWER_UNAUTHENTICATED_API`` and the
example's ``change-me`` password are refused.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from worker.settings import SettingsError
from worker.urls import is_loopback

AUTH_ENV = "REQWORKER_FLOWER_BASIC_AUTH"
#: What Flower itself reads: set from AUTH_ENV, or honoured when a user set it directly.
FLOWER_AUTH_ENV = "FLOWER_BASIC_AUTH"
#: Flower's OAuth login (a regular expression of e-mail addresses) also counts as a login.
FLOWER_OAUTH_ENV = "FLOWER_AUTH"
#: Flower's switch that opens its REST API to anyone: reqworker never starts Flower with it.
UNAUTHENTICATED_ENV = "FLOWER_UNAUTHENTICATED_API"
#: Passwords of examples, which must never be a working login.
PLACEHOLDERS = frozenset({"change-me", "changeme", "change_me"})
#: The user name of a login made up because none was configured.
GENERATED_USER = "reqworker"
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 5555


class FlowerConfigError(SettingsError):
    """The Flower login setting cannot be used; the message never repeats a password."""


def parse_basic_auth(value: str, *, name: str = AUTH_ENV) -> list[str]:
    """The ``user:password`` entries of a basic-auth setting, checked and trimmed."""
    entries = [entry.strip() for entry in value.split(",")]
    for number, entry in enumerate(entries, start=1):
        user, colon, password = entry.partition(":")
        where = f"entry {number}" if len(entries) > 1 else "its value"
        if not colon or not user.strip() or not password:
            raise FlowerConfigError(
                f"{name}: {where} is not user:password (separate several logins with commas)"
            )
        if password.strip().lower() in PLACEHOLDERS:
            raise FlowerConfigError(f"{name}: {where} keeps the example's placeholder password; "
                                    "choose a real one")
    return entries


@dataclass(frozen=True)
class FlowerPlan:
    """How Flower is to be started: its command line, its environment, what to tell the user."""

    argv: list[str]
    env: dict[str, str]
    address: str
    port: int
    login: bool
    notices: list[str] = field(default_factory=list)


def plan_flower(
    port: int = DEFAULT_PORT,
    address: str = LOOPBACK,
    env: Mapping[str, str] | None = None,
    *,
    python: str | None = None,
) -> FlowerPlan:
    """Build Flower's command line and environment; raises ``FlowerConfigError``."""
    out = dict(os.environ if env is None else env)
    notices: list[str] = []
    if out.get(UNAUTHENTICATED_ENV, "").strip():
        raise FlowerConfigError(f"{UNAUTHENTICATED_ENV} would let anyone who reaches Flower use its "
                                "REST API (revoke jobs, shut down workers); unset it: reqworker "
                                "always starts Flower behind a login")
    raw = out.get(AUTH_ENV, "").strip()
    source = AUTH_ENV
    if not raw:
        raw, source = out.get(FLOWER_AUTH_ENV, "").strip(), FLOWER_AUTH_ENV
    if raw:
        out[FLOWER_AUTH_ENV] = ",".join(parse_basic_auth(raw, name=source))
    else:
        out.pop(FLOWER_AUTH_ENV, None)  # set but empty: Flower would fail on it
    login = bool(raw) or bool(out.get(FLOWER_OAUTH_ENV, "").strip())
    if not login:
        # Flower always wants a login: without one configured, a random one for this run.
        made = f"{GENERATED_USER}:{secrets.token_urlsafe(18)}"
        out[FLOWER_AUTH_ENV] = made
        notices.append(f"{AUTH_ENV} is not set: this Flower's login is {made} (made up for this "
                       "run, shown once)")
        if not is_loopback(address):
            asked = address or "every address"
            notices.append(f"without a login of your own Flower listens on {LOOPBACK} only, not "
                           f"on {asked}; set {AUTH_ENV}=user:password to listen there")
            address = LOOPBACK
    argv = [python or sys.executable, "-m", "celery", "-A", "worker.app", "flower",
            f"--port={port}", f"--address={address}"]
    return FlowerPlan(argv=argv, env=out, address=address, port=port, login=login,
                      notices=notices)


def exec_flower(plan: FlowerPlan) -> NoReturn:
    """Replace this process with Flower (so signals reach it directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(plan.argv[0], plan.argv, plan.env)
